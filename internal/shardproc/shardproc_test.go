package shardproc_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shardchat/shard/internal/shardproc"
)

// bin is cmd/shard, built once by TestMain for every test here.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "shardproc-test-")
	if err != nil {
		panic(err)
	}
	bin, err = shardproc.Build(context.Background(), dir)
	if err != nil {
		os.RemoveAll(dir)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestClusterIsReadyOnOneRingAndDrainsCleanly is what bench and the tests
// rely on: nodes n1, n2 on 127.0.0.2 and .3 that know each other when
// StartCluster returns, with their flags and environment, and that exit 0
// when drained.
func TestClusterIsReadyOnOneRingAndDrainsCleanly(t *testing.T) {
	dir := t.TempDir()
	procs, err := shardproc.StartCluster(context.Background(), shardproc.ClusterSpec{
		Nodes: 2,
		Node: shardproc.Spec{Bin: bin, Args: []string{"--routing", "broadcast", "--drain-timeout", "5s"},
			Env: []string{"GOMAXPROCS=1"}},
		LogDir:  dir,
		Timeout: 30 * time.Second,
	})
	t.Cleanup(func() { shardproc.Stop(0, procs...) })
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range procs {
		if want := shardproc.Loopback(i); !strings.HasPrefix(p.HTTP, want+":") || !strings.HasPrefix(p.Gossip, want+":") {
			t.Errorf("%s listens on %s and %s, want %s", p.Name, p.HTTP, p.Gossip, want)
		}
		v, err := p.Cluster()
		if err != nil {
			t.Fatal(err)
		}
		if v.Self != p.Name || len(v.Members) != 2 || v.Ring.Members != 2 || v.Routing != "broadcast" {
			t.Errorf("%s's /api/cluster: %+v, want itself, 2 members, a ring of 2, broadcast routing", p.Name, v)
		}
		if procs := gomaxprocs(t, p); procs != "1" {
			t.Errorf("%s runs with GOMAXPROCS %s, want the 1 its Env set", p.Name, procs)
		}
		if _, err := os.Stat(filepath.Join(dir, p.Name+".log")); err != nil {
			t.Errorf("%s has no log in %s: %v", p.Name, dir, err)
		}
	}
	shardproc.Stop(10*time.Second, procs...)
	for _, p := range procs {
		if code := p.Wait(0); code != 0 {
			t.Errorf("%s exited %d after SIGTERM, want 0\n%s", p.Name, code, p.Output())
		}
	}
}

// gomaxprocs is what p's /metrics says its runtime.GOMAXPROCS is.
func gomaxprocs(t *testing.T, p *shardproc.Process) string {
	t.Helper()
	resp, err := http.Get("http://" + p.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "go_sched_gomaxprocs_threads "); ok {
			return v
		}
	}
	t.Fatalf("%s's /metrics has no go_sched_gomaxprocs_threads", p.Name)
	return ""
}

// TestNodeThatExitsEndsTheWaitAndARestartHasItsOwnOutput: a node that
// cannot start is reported with its own words, without waiting out the
// timeout; started again from the same Spec, it runs under the same name
// and addresses, and its Output is that run's alone.
func TestNodeThatExitsEndsTheWaitAndARestartHasItsOwnOutput(t *testing.T) {
	addrs, err := shardproc.FreeAddrs(shardproc.Loopback(0))
	if err != nil {
		t.Fatal(err)
	}
	spec := shardproc.Spec{Name: "n1", Addrs: addrs, Bin: bin, Log: filepath.Join(t.TempDir(), "n1.log"),
		Args: []string{"--routing", "sideways"}}
	bad, err := shardproc.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bad.Signal(syscall.SIGKILL) })
	err = shardproc.WaitReady(context.Background(), time.Hour, bad)
	if err == nil || !strings.Contains(err.Error(), "n1 exited") || !strings.Contains(err.Error(), "sideways") {
		t.Fatalf("waiting for a node with a bad flag: %v, want that n1 exited, with its message", err)
	}

	spec.Args = []string{"--routing", "owner"}
	good, err := shardproc.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { good.Signal(syscall.SIGKILL) })
	if err := shardproc.WaitReady(context.Background(), 30*time.Second, good); err != nil {
		t.Fatal(err)
	}
	if v, err := good.Cluster(); err != nil || v.Self != "n1" {
		t.Fatalf("restarted node's /api/cluster: %+v %v, want n1", v, err)
	}
	if out := good.Output(); strings.Contains(out, "sideways") {
		t.Fatalf("the second run's output holds the first run's:\n%s", out)
	}
	if !strings.Contains(bad.Output(), "sideways") {
		t.Fatalf("the first run's output lost its own message:\n%s", bad.Output())
	}
	good.Signal(syscall.SIGTERM)
	if code := good.Wait(10 * time.Second); code != 0 {
		t.Fatalf("n1 exited %d after SIGTERM, want 0\n%s", code, good.Output())
	}
}
