package web_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/freeport"
	"github.com/shardchat/shard/internal/shardproc"
	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/protocol"
)

// nginxServer is nginx in front of test nodes, from web/nginx.conf.tmpl,
// filled in as scripts/run-cluster.sh does; it can be killed and started
// again on the same address.
type nginxServer struct {
	t      *testing.T
	bin    string
	dir    string // its configuration, pid file, logs and temp files
	base   string // the page's base URL, http://127.0.0.1:port
	cmd    *exec.Cmd
	done   chan error // the master's end
	output *strings.Builder
}

// startNginx runs nginx in front of procs on a free loopback port, until
// the test ends.
func startNginx(t *testing.T, nginx string, procs []*shardproc.Process) *nginxServer {
	t.Helper()
	tmpl, err := os.ReadFile("nginx.conf.tmpl")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// nginx running as root hands its temp directories to an unprivileged
	// worker, which must be able to reach them.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	port, err := freeport.TCP("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	var conf strings.Builder
	for _, line := range strings.SplitAfter(string(tmpl), "\n") {
		line = strings.ReplaceAll(line, "@DIR@", dir)
		line = strings.ReplaceAll(line, "@LISTEN@", listen)
		if !strings.Contains(line, "@NODE@") {
			conf.WriteString(line)
			continue
		}
		for _, p := range procs {
			conf.WriteString(strings.ReplaceAll(line, "@NODE@", p.HTTP))
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	n := &nginxServer{t: t, bin: nginx, dir: dir, base: "http://" + listen}
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx error log:\n%s", log)
		}
	})
	n.start()
	return n
}

// start runs nginx and waits until it answers /healthz from a node.
func (n *nginxServer) start() {
	t := n.t
	t.Helper()
	errLog := filepath.Join(n.dir, "error.log")
	n.cmd = exec.Command(n.bin, "-e", errLog, "-c", filepath.Join(n.dir, "nginx.conf"), "-p", n.dir)
	// Its own process group: the master and its workers, for kill.
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	n.output = &strings.Builder{}
	n.cmd.Stdout, n.cmd.Stderr = n.output, n.output
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	done := make(chan error, 1)
	n.done = done
	go func(cmd *exec.Cmd) { done <- cmd.Wait() }(n.cmd)
	wait.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		select {
		case err := <-done:
			log, _ := os.ReadFile(errLog)
			t.Fatalf("nginx exited: %v\n%s\n%s", err, n.output, log)
		default:
		}
		resp, err := http.Get(n.base + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("GET /healthz through nginx: %d", resp.StatusCode)
		}
		return nil
	})
}

// kill ends nginx as a crash or `systemctl kill -s KILL nginx` would:
// SIGKILL to the master and its workers at once, every connection through
// it cut.
func (n *nginxServer) kill() {
	_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	<-n.done
	n.cmd = nil
}

// stop ends nginx gracefully, if it runs.
func (n *nginxServer) stop() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(5 * time.Second):
		n.kill()
	}
	n.cmd = nil
}

// TestGoClientReconnectsThroughARestartedNginx: Go clients with Reconnect,
// connected through nginx, lose their connections when nginx is killed and
// connect again through the same address once nginx is back, by
// themselves; the next send is delivered.
func TestGoClientReconnectsThroughARestartedNginx(t *testing.T) {
	ng := startNginx(t, lookTool(t, "nginx", "/usr/sbin/nginx"), testcluster.StartProcesses(t, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wsURL := "ws" + strings.TrimPrefix(ng.base, "http") + "/ws"
	dial := func(user string) (*client.Client, chan client.State) {
		states := make(chan client.State, 64)
		cl, err := client.Dial(ctx, client.Options{URL: wsURL, User: user, Reconnect: true,
			OnState: func(s client.State) {
				select {
				case states <- s:
				default:
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl, states
	}
	alice, aliceStates := dial("alice")
	bob, bobStates := dial("bob")
	if ack, err := alice.Send(ctx, "bob", "before"); err != nil || ack.Status != protocol.StatusDelivered {
		t.Fatalf("send before the restart: %+v %v", ack, err)
	}
	select {
	case <-bob.Messages():
	case <-ctx.Done():
		t.Fatal("bob got nothing before the restart, although alice's send was delivered")
	}

	awaitState := func(user string, states chan client.State, what string, match func(client.State) bool) {
		t.Helper()
		for {
			select {
			case s := <-states:
				if match(s) {
					return
				}
			case <-ctx.Done():
				t.Fatalf("%s's client never reported %s", user, what)
			}
		}
	}
	lost := func(s client.State) bool { _, ok := s.(client.Disconnected); return ok }
	back := func(s client.State) bool { _, ok := s.(client.Connected); return ok }
	ng.kill()
	awaitState("alice", aliceStates, "the lost connection", lost)
	awaitState("bob", bobStates, "the lost connection", lost)
	ng.start()
	awaitState("alice", aliceStates, "a new connection", back)
	awaitState("bob", bobStates, "a new connection", back)
	ack, err := alice.Send(ctx, "bob", "after")
	if err != nil || ack.Status != protocol.StatusDelivered {
		t.Fatalf("alice's first send after nginx came back: %+v %v, want delivered", ack, err)
	}
	select {
	case m := <-bob.Messages():
		if m.Body != "after" {
			t.Fatalf("bob got %q after the restart, want %q", m.Body, "after")
		}
	case <-ctx.Done():
		t.Fatal("bob got nothing after the restart")
	}
}
