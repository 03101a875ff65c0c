package shardproc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shardchat/shard/internal/freeport"
	"github.com/shardchat/shard/protocol"
)

// httpClient asks the nodes for /readyz and /api/cluster. Loopback answers
// in milliseconds, so 5 s means the node is stuck (or cut off, in the
// partition test); no proxy, whatever the environment says.
var httpClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}

// tailBytes is how much of a node's log an error message quotes: the last
// few dozen lines, where the reason it exited is.
const tailBytes = 2000

// Addrs are the three listeners of one node, host:port each.
type Addrs struct {
	HTTP   string // clients, the page and the HTTP API
	Gossip string // memberlist, TCP and UDP
	Link   string // node-to-node
}

// FreeAddrs picks free ports on host, one of the 127.0.0.x loopback
// addresses, for the three listeners.
func FreeAddrs(host string) (Addrs, error) {
	hp, err := freeport.TCP(host)
	if err != nil {
		return Addrs{}, err
	}
	gp, err := freeport.TCPAndUDP(host)
	if err != nil {
		return Addrs{}, err
	}
	lp, err := freeport.TCP(host)
	if err != nil {
		return Addrs{}, err
	}
	j := func(p int) string { return net.JoinHostPort(host, strconv.Itoa(p)) }
	return Addrs{HTTP: j(hp), Gossip: j(gp), Link: j(lp)}, nil
}

// Spec says how to start one node. Starting the same Spec again, once its
// process has exited, restarts the node under the same name and addresses.
type Spec struct {
	Name string
	Addrs
	Join string   // gossip address of a member to join; empty: start alone
	Args []string // more flags, passed as they are: --store, --pprof, --drain-timeout, ...
	Bin  string   // the shard binary (see Build)
	// Wrap, when set, is a command that runs Bin and its flags, such as
	// `ip netns exec NS`.
	Wrap []string
	// Log is the file that gets the process's stdout and stderr; a node
	// started again appends to it.
	Log string
	// Env is added to this process's environment for the node, NAME=VALUE
	// each (bench's --node-env: GOMAXPROCS=1, GOGC=400, ...).
	Env []string
	// SysProcAttr goes to exec.Cmd: bench asks that its nodes die with it.
	SysProcAttr *syscall.SysProcAttr
}

// command is the command line of s: the wrapper, the binary, the name and
// addresses, the seed, then Args.
func (s Spec) command() []string {
	argv := append(append([]string{}, s.Wrap...), s.Bin,
		"--name", s.Name, "--http", s.HTTP, "--gossip", s.Gossip, "--link", s.Link)
	if s.Join != "" {
		argv = append(argv, "--join", s.Join)
	}
	return append(argv, s.Args...)
}

// Process is one running (or exited) shard process.
type Process struct {
	Spec
	cmd     *exec.Cmd
	logFrom int64 // where this run's output starts in Spec.Log
	done    chan struct{}
	err     error // of cmd.Wait, once done is closed
}

// Start starts a node from s. It does not wait for readiness.
func Start(s Spec) (*Process, error) {
	if s.Bin == "" || s.Log == "" {
		return nil, fmt.Errorf("start %s: a Spec needs Bin and Log", s.Name)
	}
	logf, err := os.OpenFile(s.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", s.Name, err)
	}
	defer logf.Close() // the child has its own copy
	st, err := logf.Stat()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", s.Name, err)
	}
	argv := s.command()
	p := &Process{Spec: s, cmd: exec.Command(argv[0], argv[1:]...), logFrom: st.Size(), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = s.SysProcAttr
	if len(s.Env) > 0 {
		p.cmd.Env = append(os.Environ(), s.Env...)
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", s.Name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID is the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Signal sends sig to the process, if it still runs: SIGTERM drains the
// node, SIGKILL is a crash.
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
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		select { // an exit and a deadline due at once: the exit wins
		case <-p.done:
		default:
			return -1
		}
	}
	return p.cmd.ProcessState.ExitCode()
}

// Output is what this run of the process wrote to stdout and stderr so far.
func (p *Process) Output() string {
	f, err := os.Open(p.Log)
	if err != nil {
		return fmt.Sprintf("(log %s: %v)", p.Log, err)
	}
	defer f.Close()
	if _, err := f.Seek(p.logFrom, io.SeekStart); err != nil {
		return fmt.Sprintf("(log %s: %v)", p.Log, err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(log %s: %v)", p.Log, err)
	}
	return string(b)
}

// tail is the end of Output, for an error message.
func (p *Process) tail() string {
	out := p.Output()
	if len(out) > tailBytes {
		out = out[len(out)-tailBytes:]
	}
	return strings.TrimSpace(out)
}

// errExited marks an error that waiting longer cannot mend.
var errExited = errors.New("exited")

// exited is an error naming how the process ended, with the end of its
// log, or nil while it runs.
func (p *Process) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s %w: %v\n%s", p.Name, errExited, p.err, p.tail())
	default:
		return nil
	}
}

// ready is nil once the node answers /readyz with 200.
func (p *Process) ready() error {
	if err := p.exited(); err != nil {
		return err
	}
	resp, err := httpClient.Get("http://" + p.HTTP + "/readyz")
	if err != nil {
		return fmt.Errorf("%s /readyz: %w", p.Name, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s /readyz: %s", p.Name, resp.Status)
	}
	return nil
}

// Cluster asks the node for GET /api/cluster.
func (p *Process) Cluster() (protocol.ClusterInfo, error) {
	var v protocol.ClusterInfo
	resp, err := httpClient.Get("http://" + p.HTTP + "/api/cluster")
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return v, fmt.Errorf("%s /api/cluster: %w", p.Name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return v, fmt.Errorf("%s /api/cluster: %s: %s", p.Name, resp.Status, bytes.TrimSpace(body))
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return v, fmt.Errorf("%s /api/cluster: %w", p.Name, err)
	}
	return v, nil
}
