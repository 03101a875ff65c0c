package testcluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shardchat/shard/internal/freeport"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/protocol"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary builds cmd/shard once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "shard-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "shard")
		out, err := exec.Command("go", "build", "-race", "-o", buildPath, "github.com/shardchat/shard/cmd/shard").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// FreePort returns a TCP port that was free on host a moment ago; with UDP
// too when udp is set (memberlist binds both).
func FreePort(t testing.TB, host string, udp bool) int {
	t.Helper()
	find := freeport.TCP
	if udp {
		find = freeport.TCPAndUDP
	}
	port, err := find(host)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// Process is one shard process started by a test.
type Process struct {
	Name   string
	HTTP   string // host:port
	Gossip string // host:port
	cmd    *exec.Cmd
	out    *syncBuffer
	done   chan struct{}
	err    error
}

// ProcessAddrs picks free http, gossip and link addresses on host, one of
// the 127.0.0.x loopback addresses.
func ProcessAddrs(t testing.TB, host string) (http, gossip, link string) {
	j := func(p int) string { return net.JoinHostPort(host, strconv.Itoa(p)) }
	return j(FreePort(t, host, false)), j(FreePort(t, host, true)), j(FreePort(t, host, false))
}

// StartProcess runs the shard binary with args and stops it (SIGKILL) when
// the test ends, if it still runs. It does not wait for readiness.
func StartProcess(t testing.TB, name string, args ...string) *Process {
	t.Helper()
	return StartCommand(t, name, Binary(t), args...)
}

// StartCommand is StartProcess for a command that runs the shard binary
// itself, such as `ip netns exec NS shard ...`: args must hold its --http.
func StartCommand(t testing.TB, name, command string, args ...string) *Process {
	t.Helper()
	cmd := exec.Command(command, args...)
	p := &Process{Name: name, cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	for i, a := range args {
		if i+1 < len(args) {
			switch a {
			case "--http":
				p.HTTP = args[i+1]
			case "--gossip":
				p.Gossip = args[i+1]
			}
		}
	}
	cmd.Stdout = p.out
	cmd.Stderr = p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("log of %s:\n%s", name, p.Output())
		}
	})
	return p
}

// Signal sends sig to the process, if it still runs.
func (p *Process) Signal(sig os.Signal) {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(sig)
	}
}

// Wait waits up to d for the process to exit and returns its exit code, or
// -1 if it is still running.
func (p *Process) Wait(d time.Duration) int {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		return -1
	}
}

// Output is what the process wrote to stdout and stderr so far.
func (p *Process) Output() string { return p.out.String() }

// WaitReady polls /readyz until it answers 200.
func (p *Process) WaitReady(t testing.TB) {
	t.Helper()
	wait.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		select {
		case <-p.done:
			t.Fatalf("%s exited: %v\n%s", p.Name, p.err, p.Output())
		default:
		}
		resp, err := http.Get("http://" + p.HTTP + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s /readyz: %d", p.Name, resp.StatusCode)
		}
		return nil
	})
}

// Cluster fetches /api/cluster of the process.
func (p *Process) Cluster() (protocol.ClusterInfo, error) {
	var v protocol.ClusterInfo
	resp, err := http.Get("http://" + p.HTTP + "/api/cluster")
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	return v, json.NewDecoder(resp.Body).Decode(&v)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
