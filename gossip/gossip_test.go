package gossip

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shardchat/shard/internal/freeport"
	"github.com/shardchat/shard/internal/wait"
)

// syncBuffer collects one node's log; it is printed only when the test fails.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testConfig is a node on loopback with a free port, its log kept for a failure report.
func testConfig(t testing.TB, name string, seeds ...string) Config {
	t.Helper()
	buf := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of %s:\n%s", name, buf.String())
		}
	})
	return Config{
		Name:   name,
		Bind:   "127.0.0.1:0",
		Join:   seeds,
		Meta:   Meta{HTTP: name + ".http:8080", Link: name + ".link:7947"},
		Logger: slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name),
	}
}

func start(t testing.TB, cfg Config) *Gossip {
	t.Helper()
	g, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start(%s): %v", cfg.Name, err)
	}
	t.Cleanup(func() { _ = g.Shutdown() })
	return g
}

// cluster starts n nodes named n1..n<n>, all joining through n1, and waits until every node
// lists every other one alive.
func cluster(t testing.TB, n int) []*Gossip {
	t.Helper()
	nodes := []*Gossip{start(t, testConfig(t, "n1"))}
	for i := 2; i <= n; i++ {
		nodes = append(nodes, start(t, testConfig(t, fmt.Sprintf("n%d", i), nodes[0].LocalAddr())))
	}
	wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		for _, g := range nodes {
			if got := names(g.Alive()); len(got) != n {
				return fmt.Errorf("%s sees alive %v, want %d members", g.LocalName(), got, n)
			}
		}
		return nil
	})
	return nodes
}

func names(ms []Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}

func find(ms []Member, name string) (Member, bool) {
	for _, m := range ms {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// freeAddr returns a loopback address nobody listens on (it was free a
// moment ago).
func freeAddr(t testing.TB) string {
	t.Helper()
	port, err := freeport.TCPAndUDP("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

func TestThreeNodesSeeEachOtherWithTheirMeta(t *testing.T) {
	t0 := time.Now()
	nodes := cluster(t, 3)
	t.Logf("3 nodes joined and all see all after %v", time.Since(t0).Round(time.Millisecond))

	for _, g := range nodes {
		alive := g.Alive()
		if got := strings.Join(names(alive), ","); got != "n1,n2,n3" {
			t.Fatalf("%s: Alive() = %s, want n1,n2,n3 sorted", g.LocalName(), got)
		}
		for _, want := range nodes {
			m, _ := find(alive, want.LocalName())
			wantMeta := Meta{HTTP: want.LocalName() + ".http:8080", Link: want.LocalName() + ".link:7947"}
			if m.Meta != wantMeta || m.Addr != want.LocalAddr() || m.State != StateAlive {
				t.Errorf("%s lists %+v, want addr %s meta %+v alive", g.LocalName(), m, want.LocalAddr(), wantMeta)
			}
		}
		if got := g.Members(); len(got) != 3 {
			t.Errorf("%s: Members() = %+v, want the 3 alive members", g.LocalName(), got)
		}
	}
	if !strings.HasPrefix(nodes[0].LocalAddr(), "127.0.0.1:") || strings.HasSuffix(nodes[0].LocalAddr(), ":0") {
		t.Errorf("LocalAddr() = %q, want the real bound loopback port", nodes[0].LocalAddr())
	}
}

func TestGracefulLeaveIsListedLeftAndLeavesTheRing(t *testing.T) {
	t.Parallel()
	nodes := cluster(t, 3)
	leaver := nodes[2]

	t0 := time.Now()
	if err := leaver.Leave(time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	leaveTook := time.Since(t0)
	if err := leaver.Leave(time.Second); err != nil {
		t.Errorf("second Leave: %v, want nil", err)
	}
	if m, _ := find(leaver.Members(), "n3"); m.State != StateLeft {
		t.Errorf("the leaver lists itself %q, want left", m.State)
	}
	if err := leaver.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := leaver.Leave(time.Second); err == nil {
		t.Errorf("Leave after Shutdown returned nil, want an error (and no panic)")
	}

	wait.For(t, 2*time.Second, 10*time.Millisecond, func() error {
		for _, g := range nodes[:2] {
			if m, ok := find(g.Members(), "n3"); !ok || m.State != StateLeft {
				return fmt.Errorf("%s lists n3 as %+v, want left", g.LocalName(), m)
			}
			if _, ok := find(g.Alive(), "n3"); ok {
				return fmt.Errorf("%s still has n3 in Alive()", g.LocalName())
			}
		}
		return nil
	})
	t.Logf("Leave returned after %v; both peers list n3 left %v after Leave began",
		leaveTook.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
}

func TestCrashIsListedDeadWithinFiveSeconds(t *testing.T) {
	t.Parallel()
	nodes := cluster(t, 3)

	t0 := time.Now()
	if err := nodes[2].Shutdown(); err != nil { // no Leave: to its peers this is kill -9
		t.Fatalf("Shutdown: %v", err)
	}
	seen := map[string]time.Duration{}
	wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		var err error
		for _, g := range nodes[:2] {
			if _, ok := seen[g.LocalName()]; ok {
				continue
			}
			if m, ok := find(g.Members(), "n3"); !ok || m.State != StateDead {
				err = fmt.Errorf("%s lists n3 as %+v, want dead", g.LocalName(), m)
				continue
			}
			if _, ok := find(g.Alive(), "n3"); ok {
				return fmt.Errorf("%s lists n3 dead but keeps it in Alive()", g.LocalName())
			}
			seen[g.LocalName()] = time.Since(t0)
		}
		return err
	})
	t.Logf("crash of n3 detected by n1 after %v, by n2 after %v",
		seen["n1"].Round(time.Millisecond), seen["n2"].Round(time.Millisecond))
}

func TestChangesSignalsJoinLeaveAndFailure(t *testing.T) {
	t.Parallel()
	a := start(t, testConfig(t, "a"))
	drain := func() {
		for {
			select {
			case <-a.Changes():
			default:
				return
			}
		}
	}
	expect := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.After(6 * time.Second)
		for {
			select {
			case <-a.Changes():
				if cond() {
					return
				}
			case <-deadline:
				t.Fatalf("no Changes() signal showing %s within 6s; Members() = %+v", what, a.Members())
			}
		}
	}
	drain()

	b := start(t, testConfig(t, "b", a.LocalAddr()))
	expect("b joined", func() bool { _, ok := find(a.Alive(), "b"); return ok })

	c := start(t, testConfig(t, "c", a.LocalAddr()))
	expect("c joined", func() bool { _, ok := find(a.Alive(), "c"); return ok })

	if err := b.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	expect("b left", func() bool { m, _ := find(a.Members(), "b"); return m.State == StateLeft })

	_ = c.Shutdown()
	expect("c failed", func() bool { m, _ := find(a.Members(), "c"); return m.State == StateDead })
}

func TestDuplicateNameFailsStart(t *testing.T) {
	nodes := cluster(t, 2)
	n2Addr := nodes[1].LocalAddr()

	for _, seed := range []*Gossip{nodes[0], nodes[1]} { // through a third node, and through the namesake itself
		_, err := Start(testConfig(t, "n2", seed.LocalAddr()))
		if err == nil {
			t.Fatalf("a second n2 joining through %s started, want a name conflict error", seed.LocalName())
		}
		if !strings.Contains(err.Error(), `"n2"`) || !strings.Contains(err.Error(), n2Addr) {
			t.Errorf("error %q should name n2 and the address of the live n2 (%s)", err, n2Addr)
		}
		t.Logf("through %s: %v", seed.LocalName(), err)
	}

	// The original members did not take the impostor in.
	for _, g := range nodes {
		m, _ := find(g.Alive(), "n2")
		if m.Addr != n2Addr || len(g.Alive()) != 2 {
			t.Errorf("%s: Alive() = %+v, want n1 and the original n2 at %s", g.LocalName(), g.Alive(), n2Addr)
		}
	}
}

func TestUnreachableSeedFailsAfterJoinTimeoutNamingIt(t *testing.T) {
	t.Parallel()
	seed := freeAddr(t)
	cfg := testConfig(t, "lonely", seed)
	cfg.JoinTimeout = time.Second

	t0 := time.Now()
	g, err := Start(cfg)
	took := time.Since(t0)
	if err == nil {
		g.Shutdown()
		t.Fatal("Start with an unreachable seed succeeded")
	}
	if !strings.Contains(err.Error(), seed) {
		t.Errorf("error %q does not name the seed %s", err, seed)
	}
	if took < time.Second || took > 3*time.Second {
		t.Errorf("Start gave up after %v, want about the 1s JoinTimeout", took)
	}
	t.Logf("gave up after %v: %v", took.Round(time.Millisecond), err)
}

func TestSeedThatStartsLateIsJoined(t *testing.T) {
	t.Parallel()
	seedAddr := freeAddr(t)
	type result struct {
		g   *Gossip
		err error
	}
	done := make(chan result, 1)
	go func() {
		cfg := testConfig(t, "early", seedAddr)
		cfg.JoinTimeout = 10 * time.Second
		g, err := Start(cfg)
		done <- result{g, err}
	}()
	time.Sleep(300 * time.Millisecond) // the seed is not there yet when the joiner starts
	seedCfg := testConfig(t, "seed")
	seedCfg.Bind = seedAddr
	seed := start(t, seedCfg)

	r := <-done
	if r.err != nil {
		t.Fatalf("Start retrying a late seed: %v", r.err)
	}
	t.Cleanup(func() { _ = r.g.Shutdown() })
	wait.For(t, 2*time.Second, 10*time.Millisecond, func() error {
		if _, ok := find(seed.Alive(), "early"); !ok {
			return fmt.Errorf("seed sees %v, want early among them", names(seed.Alive()))
		}
		return nil
	})
}

func TestWrongClusterKeyCannotJoin(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "keeper")
	cfg.ClusterKey = "right"
	keeper := start(t, cfg)

	for _, key := range []string{"wrong", ""} {
		cfg := testConfig(t, "intruder", keeper.LocalAddr())
		cfg.ClusterKey = key
		t0 := time.Now()
		g, err := Start(cfg)
		if err == nil {
			g.Shutdown()
			t.Fatalf("a node with key %q joined a cluster keyed %q", key, "right")
		}
		if took := time.Since(t0); took > 2*time.Second {
			t.Errorf("key %q: Start took %v to fail; a key mismatch should not be retried", key, took)
		}
		t.Logf("key %q: %v", key, err)
	}

	cfg = testConfig(t, "friend", keeper.LocalAddr())
	cfg.ClusterKey = "right"
	start(t, cfg)
	wait.For(t, 2*time.Second, 10*time.Millisecond, func() error {
		if got := names(keeper.Alive()); strings.Join(got, ",") != "friend,keeper" {
			return fmt.Errorf("keeper sees %v, want friend,keeper", got)
		}
		return nil
	})
}

func TestPortInUseFailsNamingTheAddress(t *testing.T) {
	t.Parallel()
	a := start(t, testConfig(t, "a"))
	cfg := testConfig(t, "b")
	cfg.Bind = a.LocalAddr()
	g, err := Start(cfg)
	if err == nil {
		g.Shutdown()
		t.Fatalf("two nodes bound %s", cfg.Bind)
	}
	if !strings.Contains(err.Error(), a.LocalAddr()) {
		t.Errorf("error %q does not name the address %s", err, a.LocalAddr())
	}
	t.Logf("%v", err)
}

func TestBadConfigFailsStart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no name", func(c *Config) { c.Name = "" }, "Name is required"},
		{"hostname bind", func(c *Config) { c.Bind = "localhost:0" }, "not an IP address"},
		{"meta over 512 bytes", func(c *Config) { c.Meta.HTTP = strings.Repeat("x", 600) }, "512"},
	} {
		cfg := testConfig(t, "bad")
		tc.edit(&cfg)
		g, err := Start(cfg)
		if err == nil {
			g.Shutdown()
			t.Errorf("%s: Start succeeded", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q, want it to mention %q", tc.name, err, tc.want)
		}
	}
}

// A node that crashed and comes back under its name at another address (port 0 picks a new
// one) must be taken back by everyone, not ignored as a conflict (DeadNodeReclaimTime).
func TestRestartUnderSameNameAtNewAddressIsReadmitted(t *testing.T) {
	t.Parallel()
	nodes := cluster(t, 3)
	oldAddr := nodes[2].LocalAddr()
	_ = nodes[2].Shutdown()
	wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		for _, g := range nodes[:2] {
			if m, _ := find(g.Members(), "n3"); m.State != StateDead {
				return fmt.Errorf("%s lists n3 as %q, want dead", g.LocalName(), m.State)
			}
		}
		return nil
	})

	t0 := time.Now()
	n3 := start(t, testConfig(t, "n3", nodes[0].LocalAddr()))
	if n3.LocalAddr() == oldAddr {
		t.Skipf("port 0 gave the old port back (%s); nothing to test", oldAddr)
	}
	wait.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, g := range append(nodes[:2:2], n3) {
			m, ok := find(g.Alive(), "n3")
			if !ok || m.Addr != n3.LocalAddr() {
				return fmt.Errorf("%s lists n3 as %+v, want alive at %s", g.LocalName(), m, n3.LocalAddr())
			}
			if len(g.Alive()) != 3 {
				return fmt.Errorf("%s sees alive %v, want 3", g.LocalName(), names(g.Alive()))
			}
		}
		return nil
	})
	t.Logf("restarted n3 (%s -> %s) listed alive by all after %v",
		oldAddr, n3.LocalAddr(), time.Since(t0).Round(time.Millisecond))
}
