package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/link"
	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/store"
)

// memNet is an in-memory network of routers, for tests that need more of
// them than loopback sockets would carry: each node serves its requests,
// and takes their replies, in order, on a goroutine of its own, as a link's
// reader does.
type memNet struct {
	mu       sync.Mutex
	nodes    map[string]*memTransport
	requests map[kind]int // requests sent, by kind, one per frame however many keys
}

type memTransport struct {
	net  *memNet
	self link.Peer

	mu    sync.Mutex
	serve link.Handler
	queue []func()
	down  bool
	wake  chan struct{}
	// pending are the callbacks of t's requests not answered yet, which
	// Close fails, as a link's Close does: each is called exactly once.
	pending map[uint64]func([]byte, error)
	nextID  uint64
}

func newMemNet() *memNet {
	return &memNet{nodes: make(map[string]*memTransport), requests: make(map[kind]int)}
}

func (n *memNet) transport(self link.Peer) *memTransport {
	t := &memTransport{net: n, self: self, wake: make(chan struct{}, 1)}
	n.mu.Lock()
	n.nodes[self.Name] = t
	n.mu.Unlock()
	return t
}

func (n *memNet) sent(k kind) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.requests[k]
}

// run does f on t's goroutine, after what is queued; false once t is down.
func (t *memTransport) run(f func()) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.down {
		return false
	}
	t.queue = append(t.queue, f)
	select {
	case t.wake <- struct{}{}:
	default:
	}
	return true
}

func (t *memTransport) Serve(h link.Handler) {
	t.serve = h
	go func() {
		for range t.wake {
			t.mu.Lock()
			q := t.queue
			t.queue = nil
			down := t.down
			t.mu.Unlock()
			if down {
				return
			}
			for _, f := range q {
				f()
			}
		}
	}()
}

func (t *memTransport) SetPeers(map[string]link.Member) {}
func (t *memTransport) Queued() int                     { return 0 }

// RequestCounted counts a request in sent before its peer can serve it, as
// link.Links does.
func (t *memTransport) RequestCounted(peer string, k link.Kind, payload []byte, sent link.Counter, n float64, cb func([]byte, error)) bool {
	t.net.mu.Lock()
	dst := t.net.nodes[peer]
	t.net.requests[kind(k)]++
	t.net.mu.Unlock()
	t.mu.Lock()
	if t.down {
		t.mu.Unlock()
		cb(nil, link.ErrPeerDown)
		return false
	}
	if t.pending == nil {
		t.pending = make(map[uint64]func([]byte, error))
	}
	t.nextID++
	id := t.nextID
	t.pending[id] = cb
	t.mu.Unlock()
	if dst != nil && sent != nil {
		sent.Add(n)
	}
	p := append([]byte(nil), payload...)
	if dst == nil || !dst.run(func() {
		dst.serve(t.self, k, p, func(reply []byte) {
			r := append([]byte(nil), reply...)
			t.run(func() { t.answer(id, r, nil) })
		})
	}) {
		t.answer(id, nil, link.ErrPeerDown)
		return false
	}
	return true
}

// answer calls the callback of t's request id, unless Close failed it.
func (t *memTransport) answer(id uint64, reply []byte, err error) {
	t.mu.Lock()
	cb := t.pending[id]
	delete(t.pending, id)
	t.mu.Unlock()
	if cb != nil {
		cb(reply, err)
	}
}

// Close takes t down: requests to it fail from now on, and it answers none
// of those it had not served, as a process killed with SIGKILL; its own
// requests not answered yet fail.
func (t *memTransport) Close() {
	t.mu.Lock()
	t.down = true
	pending := t.pending
	t.pending = nil
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
	for _, cb := range pending {
		cb(nil, link.ErrPeerDown)
	}
}

// watcherConn is a connection that keeps the frames it is handed, and its
// answers.
type watcherConn struct {
	testConn
	mu      sync.Mutex
	frames  [][]byte
	answers [][]byte
}

func (c *watcherConn) Send(f []byte) bool { return c.Queue(f) }
func (c *watcherConn) Queue(fs ...[]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range fs {
		c.frames = append(c.frames, append([]byte(nil), f...))
	}
	return true
}
func (c *watcherConn) Answer(f []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.answers = append(c.answers, f)
}

// presences returns the presence frames c was handed, decoded.
func (c *watcherConn) presences(t testing.TB) []protocol.Presence {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []protocol.Presence
	for _, f := range c.frames {
		var p struct {
			Type     string `json:"type"`
			User     string `json:"user"`
			Online   bool   `json:"online"`
			LastSeen int64  `json:"last_seen"`
		}
		if err := json.Unmarshal(f, &p); err != nil {
			t.Fatalf("frame %s: %v", f, err)
		}
		if p.Type == protocol.TypePresence {
			out = append(out, protocol.Presence{User: p.User, Online: p.Online, LastSeen: p.LastSeen})
		}
	}
	return out
}

// awaitPresence waits until c has been handed count presence frames of
// user and returns the last.
func (c *watcherConn) awaitPresence(t testing.TB, user string, count int) protocol.Presence {
	t.Helper()
	var last protocol.Presence
	wait.For(t, 10*time.Second, 5*time.Millisecond, func() error {
		n := 0
		for _, p := range c.presences(t) {
			if p.User == user {
				n, last = n+1, p
			}
		}
		if n < count {
			return fmt.Errorf("conn %d was handed %d presence frames of %s, want %d", c.id, n, user, count)
		}
		return nil
	})
	return last
}

// memCluster starts routers named r0, r1, ... on one memNet, each on a ring
// of all, and waits until every one is settled.
func memCluster(t testing.TB, n int) ([]*Router, *memNet) {
	return memClusterWith(t, n, nil)
}

// memClusterWith is memCluster with st as every router's store.
func memClusterWith(t testing.TB, n int, st store.Store) ([]*Router, *memNet) {
	t.Helper()
	net := newMemNet()
	routers := make([]*Router, n)
	members := make([]Member, n)
	for i := range routers {
		name := fmt.Sprintf("r%d", i)
		self := link.Peer{Name: name, Inc: name + "-1"}
		routers[i] = New(Config{Self: name, Incarnation: self.Inc, Store: st, Metrics: NewMetrics(prometheus.NewRegistry())}, net.transport(self))
		t.Cleanup(routers[i].Close)
		members[i] = Member{Name: name, Inc: self.Inc}
	}
	setMembers(t, routers, members)
	// Each router asked every other, new to it, to register again; each of
	// those resyncs ends with a synced report, as each router's change did.
	// Wait for them, so that a test counts only its own traffic.
	wait.For(t, 10*time.Second, 5*time.Millisecond, func() error {
		if got, want := sumCounter(routers, kindSynced), float64(2*n*(n-1)); got < want {
			return fmt.Errorf("%v synced reports sent, want %v: resyncs still under way", got, want)
		}
		return nil
	})
	return routers, net
}

// embeddedStore opens a store in a temporary directory, closed at the end
// of the test.
func embeddedStore(t testing.TB) store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// setMembers installs members on routers and waits until each is settled.
func setMembers(t testing.TB, routers []*Router, members []Member) {
	t.Helper()
	var wg sync.WaitGroup
	for _, r := range routers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.SetMembers(members); err != nil {
				t.Errorf("%s: set members: %v", r.cfg.Self, err)
			}
		}()
	}
	wg.Wait()
	wait.For(t, 10*time.Second, 5*time.Millisecond, func() error {
		for _, r := range routers {
			if v := r.view.Load(); !r.settle.settled(v.version, time.Now()) {
				return fmt.Errorf("%s is not settled", r.cfg.Self)
			}
		}
		return nil
	})
}

var connIDs atomic.Uint64

func attach(t testing.TB, r *Router, user string) *watcherConn {
	t.Helper()
	c := &watcherConn{testConn: testConn{id: connIDs.Add(1), user: user}}
	if err := r.Attach(c); err != nil {
		t.Fatalf("attach %s at %s: %v", user, r.cfg.Self, err)
	}
	return c
}

func watch(t testing.TB, r *Router, c *watcherConn, users ...string) {
	t.Helper()
	list, _ := json.Marshal(users)
	r.HandleFrame(c, &protocol.Frame{Type: protocol.TypeWatch, ID: "w", Users: string(list)})
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.answers[len(c.answers)-1]; string(a) != `{"type":"ack","id":"w","status":"ok"}` {
		t.Fatalf("watch answered %s", a)
	}
}

func sumCounter(routers []*Router, k kind) float64 {
	total := 0.0
	for _, r := range routers {
		var m dto.Metric
		r.m.PeerSent.WithLabelValues(k.String()).Write(&m)
		total += m.GetCounter().GetValue()
	}
	return total
}

// A change of a user's presence costs its owner one message to each node
// that watches the user, whatever the number of watching connections there:
// with 1 and 10 watching nodes of 3 watching connections each (and 100 in
// BenchmarkPresenceChange, where building rings of 102 takes its time).
func TestPresenceCostsOneMessagePerWatchingNode(t *testing.T) {
	for _, watching := range []int{1, 10} {
		t.Run(fmt.Sprintf("nodes=%d", watching), func(t *testing.T) {
			pc := newPresenceCluster(t, watching)
			sent, all := pc.change(t)
			if sent != float64(watching) {
				t.Fatalf("bob coming online cost %v presence messages, want %d: one per watching node", sent, watching)
			}
			t.Logf("%d watching nodes, %d watching connections: %v presence messages per change (%v node-to-node messages of every kind, the registration of bob's connection included)",
				watching, len(pc.conns), sent, all)
		})
	}
}

// BenchmarkPresenceChange reports the node-to-node messages one user coming
// online costs with 1, 10 and 100 watching nodes.
func BenchmarkPresenceChange(b *testing.B) {
	for _, watching := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("nodes=%d", watching), func(b *testing.B) {
			pc := newPresenceCluster(b, watching)
			var sent, all float64
			for b.Loop() {
				s, a := pc.change(b)
				sent, all = sent+s, all+a
			}
			b.ReportMetric(sent/float64(b.N), "presence-msgs/change")
			b.ReportMetric(all/float64(b.N), "peer-msgs/change")
		})
	}
}

// presenceCluster is an owner r0, r1 where users connect, and r2... each
// with 3 connections that watch.
type presenceCluster struct {
	routers []*Router
	conns   []*watcherConn
	next    int
}

func newPresenceCluster(t testing.TB, watching int) *presenceCluster {
	routers, _ := memCluster(t, watching+2)
	pc := &presenceCluster{routers: routers}
	for _, r := range routers[2:] {
		for range 3 {
			pc.conns = append(pc.conns, attach(t, r, "carol"))
		}
	}
	return pc
}

// change has every connection watch a new user owned by r0, connects that
// user at r1, and returns the presence messages and all the node-to-node
// messages that cost once everyone was told.
func (pc *presenceCluster) change(t testing.TB) (presence, all float64) {
	var user string
	for user == "" {
		pc.next++
		if u := fmt.Sprintf("bob%d", pc.next); pc.routers[0].Ring().Owner(u) == "r0" {
			user = u
		}
	}
	for i, c := range pc.conns {
		watch(t, pc.routers[2+i/3], c, user)
	}
	for _, c := range pc.conns {
		if p := c.awaitPresence(t, user, 1); p.Online {
			t.Fatalf("first state of %s: %+v, want offline", user, p)
		}
	}
	before, total := sumCounter(pc.routers, kindPresence), totalSent(pc.routers)
	attach(t, pc.routers[1], user)
	for _, c := range pc.conns {
		if p := c.awaitPresence(t, user, 2); !p.Online {
			t.Fatalf("second state of %s: %+v, want online", user, p)
		}
	}
	return sumCounter(pc.routers, kindPresence) - before, totalSent(pc.routers) - total
}

func totalSent(routers []*Router) float64 {
	total := 0.0
	for k := range peerRequests {
		total += sumCounter(routers, k)
	}
	return total
}

// A watch of a thousand users costs one register frame per owner, not one
// per user.
func TestWatchOfAThousandUsersIsOneFramePerOwner(t *testing.T) {
	routers, net := memCluster(t, 4)
	users := make([]string, 1000)
	for i := range users {
		users[i] = fmt.Sprintf("contact%d", i)
	}
	c := attach(t, routers[0], "carol")
	before := net.sent(kindRegister)
	watch(t, routers[0], c, users...)
	if frames := net.sent(kindRegister) - before; frames > 3 {
		t.Fatalf("a watch of 1000 users sent %d register frames, want at most one per other owner (3)", frames)
	}
	wait.For(t, 10*time.Second, 5*time.Millisecond, func() error {
		if n := len(c.presences(t)); n != len(users) {
			return fmt.Errorf("%d presence frames, want one per user (%d)", n, len(users))
		}
		return nil
	})
}

// When a user's owner dies with SIGKILL, its successor cannot tell since
// when a user who is not connected now has been gone: it may have been on
// the dead node, and be reconnecting. Watchers that believed it online must
// not hear offline unless it stays away 3 s: here bob comes back at once,
// erin never does.
func TestPresenceAfterTheOwnerCrashesWaitsForAReconnect(t *testing.T) {
	routers, net := memCluster(t, 3)
	names := []string{"r0", "r1", "r2"}
	bob, erin := ownedBy(t, "r0", names...), ""
	for i := 0; erin == "" || erin == bob; i++ {
		if u := fmt.Sprintf("erin%d", i); routers[0].Ring().Owner(u) == "r0" {
			erin = u
		}
	}
	dave := ownedBy(t, "r1", names...) // the marker, on a node that stays
	attach(t, routers[0], bob)
	attach(t, routers[0], erin)
	daveConn := attach(t, routers[1], dave)
	carol := attach(t, routers[2], "carol")
	watch(t, routers[2], carol, bob, erin, dave)
	for _, u := range []string{bob, erin, dave} {
		if p := carol.awaitPresence(t, u, 1); !p.Online {
			t.Fatalf("carol was told %+v, want %s online", p, u)
		}
	}

	// r0 dies with bob's and erin's connections; bob reconnects to r1.
	net.nodes["r0"].Close()
	crashed := time.Now()
	setMembers(t, routers[1:], []Member{{Name: "r1", Inc: "r1-1"}, {Name: "r2", Inc: "r2-1"}})
	attach(t, routers[1], bob)
	p := carol.awaitPresence(t, erin, 2)
	if p.Online || p.LastSeen != 0 {
		t.Fatalf("carol was told %+v of erin, want offline, last seen not known", p)
	}
	if waited := time.Since(crashed); waited < offlineAfter {
		t.Fatalf("erin's offline came %s after the crash, want no sooner than %s", waited, offlineAfter)
	}
	// dave leaves after bob came back: his offline, 3 s later, follows
	// any bob's would have.
	routers[1].Closed(daveConn, "client_closed")
	carol.awaitPresence(t, dave, 2)
	for _, p := range carol.presences(t) {
		if p.User == bob && !p.Online {
			t.Fatalf("carol was told bob is offline, though he reconnected at once after his owner crashed")
		}
	}
}

// With a store, last_seen outlives its owner: a user who left before his
// owner crashed is told, by the next owner, offline since he left.
func TestLastSeenOutlivesItsOwnerWithAStore(t *testing.T) {
	st := embeddedStore(t)
	routers, net := memClusterWith(t, 3, st)
	bob := ownedBy(t, "r0", "r0", "r1", "r2")
	left := time.Now().UnixMilli()
	routers[1].Closed(attach(t, routers[1], bob), "client_closed")
	wait.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		seen, err := st.LastSeen(context.Background(), bob)
		if err != nil || seen[bob] < left {
			return fmt.Errorf("the store has %v (%v) of %s, want at or after %d", seen, err, bob, left)
		}
		return nil
	})
	net.nodes["r0"].Close()
	setMembers(t, routers[1:], []Member{{Name: "r1", Inc: "r1-1"}, {Name: "r2", Inc: "r2-1"}})
	carol := attach(t, routers[2], "carol")
	watch(t, routers[2], carol, bob)
	if p := carol.awaitPresence(t, bob, 1); p.Online || p.LastSeen < left {
		t.Fatalf("carol was told %+v, want %s offline since %d", p, bob, left)
	}
}

func TestPresencePayloadsRoundTrip(t *testing.T) {
	in := []presenceUpdate{
		{state: presenceState{Presence: protocol.Presence{User: "bob", Online: true}}},
		{state: presenceState{Presence: protocol.Presence{User: "ann", LastSeen: 1732450000123}}},
		{state: presenceState{Presence: protocol.Presence{User: "eve"}, uncertain: true}},
	}
	got, err := decodePresences(appendPresences(nil, in))
	if err != nil || len(got) != len(in) {
		t.Fatalf("decoded %v, %v", got, err)
	}
	for i := range in {
		if got[i] != in[i].state {
			t.Fatalf("state %d: %+v, want %+v", i, got[i], in[i].state)
		}
	}
	if _, err := decodePresences([]byte{1, 3, 'b', ' ', 'b', 1, 0}); !errors.Is(err, errMalformed) {
		t.Fatalf("a malformed user id: %v, want malformed", err)
	}
}

// A user who closes, comes back and closes again before his owner looks
// at him (a reconnect cut at once, or an owner busy with other users) is
// told offline 3 s after his last close. The timer the owner had set for
// the first close found 3 s not passed since the second when it fired, and
// was not set again: he stayed online to his watchers for good.
func TestOfflineFollowsTheLastOfTwoClosesTheOwnerSawAtOnce(t *testing.T) {
	net := newMemNet()
	self := link.Peer{Name: "r0", Inc: "r0-1"}
	r := New(Config{Self: self.Name, Incarnation: self.Inc, Metrics: NewMetrics(prometheus.NewRegistry())}, net.transport(self))
	setMembers(t, []*Router{r}, []Member{{Name: self.Name, Inc: self.Inc}})
	r.Close() // the test looks at bob when it chooses, as the presence loop would
	v, bob := r.view.Load(), Key{Name: "bob"}
	look := func(now time.Time) []presenceUpdate {
		r.presence.mu.Lock()
		clear(r.presence.dirty)
		r.presence.mu.Unlock()
		batches := make(map[string][]presenceUpdate)
		r.lookAt(bob.Name, v, true, now, batches)
		return batches["r1"]
	}
	r.dir.Set(watchKey(bob.Name), "r1", "r1-1", 1, time.Now()) // r1 watches bob
	r.dir.Set(bob, "r2", "r2-1", 1, time.Now())
	if u := look(time.Now()); len(u) != 1 || !u[0].state.Online {
		t.Fatalf("r1 told %+v, want bob online", u)
	}
	r.dir.Set(bob, "r2", "r2-1", 0, time.Now())
	look(time.Now().Add(offlineAfter - 500*time.Millisecond)) // a late look: offline due in 0.5 s
	r.dir.Set(bob, "r2", "r2-1", 1, time.Now())
	r.dir.Set(bob, "r2", "r2-1", 0, time.Now())
	if u := look(time.Now()); len(u) != 0 {
		t.Fatalf("r1 told %+v at bob's second close, want nothing for 3 s", u)
	}
	wait.For(t, 2*offlineAfter, 5*time.Millisecond, func() error {
		r.presence.mu.Lock()
		_, marked := r.presence.dirty[bob.Name] // by the owner's timer
		r.presence.mu.Unlock()
		if !marked {
			return errors.New("the owner did not look at bob again: he stays online to r1")
		}
		if u := look(time.Now()); len(u) != 1 || u[0].state.Online {
			return fmt.Errorf("the owner looked at bob again and told r1 %+v, want offline", u)
		}
		return nil
	})
}
