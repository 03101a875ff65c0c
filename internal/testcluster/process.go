package testcluster

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shardchat/shard/internal/shardproc"
)

// processTimeout bounds each wait for test processes: a race-enabled node
// on a busy 2-core machine is ready, and a ring of a few settles, within a
// few seconds.
const processTimeout = 20 * time.Second

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary builds cmd/shard with the race detector once per test process and
// returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "shard-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath, buildErr = shardproc.Build(context.Background(), dir, "-race")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// FreeAddrs picks free http, gossip and link addresses on host, one of the
// 127.0.0.x loopback addresses.
func FreeAddrs(t testing.TB, host string) shardproc.Addrs {
	t.Helper()
	a, err := shardproc.FreeAddrs(host)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// StartProcess starts a shard process from spec: the race-enabled Binary
// unless spec.Bin names one, its log in a temporary directory unless
// spec.Log names one. It does not wait for readiness. When the test ends
// the process is killed (SIGKILL) if it still runs, and its log is printed
// if the test failed.
func StartProcess(t testing.TB, spec shardproc.Spec) *shardproc.Process {
	t.Helper()
	if spec.Bin == "" {
		spec.Bin = Binary(t)
	}
	if spec.Log == "" {
		spec.Log = filepath.Join(t.TempDir(), spec.Name+".log")
	}
	p, err := shardproc.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	killAtEnd(t, p)
	return p
}

// StartProcesses starts a cluster of n shard processes (n1 on 127.0.0.2,
// n2 on 127.0.0.3, ...) with the flags args, and waits until every one is
// ready and routes by the same ring of n.
func StartProcesses(t testing.TB, n int, args ...string) []*shardproc.Process {
	t.Helper()
	procs, err := shardproc.StartCluster(context.Background(), shardproc.ClusterSpec{
		Nodes:   n,
		Node:    shardproc.Spec{Bin: Binary(t), Args: args},
		LogDir:  t.TempDir(),
		Timeout: processTimeout,
	})
	for _, p := range procs {
		killAtEnd(t, p)
	}
	if err != nil {
		t.Fatal(err)
	}
	return procs
}

// killAtEnd kills p when the test ends, and prints its log if the test
// failed.
func killAtEnd(t testing.TB, p *shardproc.Process) {
	t.Cleanup(func() {
		p.Signal(syscall.SIGKILL)
		p.Wait(processTimeout)
		if t.Failed() {
			t.Logf("log of %s:\n%s", p.Name, p.Output())
		}
	})
}

// WaitReady waits until every process answers /readyz, and fails the test
// at once if one exits.
func WaitReady(t testing.TB, procs ...*shardproc.Process) {
	t.Helper()
	if err := shardproc.WaitReady(context.Background(), processTimeout, procs...); err != nil {
		t.Fatal(err)
	}
}

// WaitRing waits up to within until every process routes by the same ring
// of want members.
func WaitRing(t testing.TB, within time.Duration, want int, procs ...*shardproc.Process) {
	t.Helper()
	if err := shardproc.WaitRing(context.Background(), within, want, procs...); err != nil {
		t.Fatal(err)
	}
}
