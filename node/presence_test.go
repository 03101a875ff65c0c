package node_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/node"
	"github.com/shardchat/shard/protocol"
)

// next waits up to within for the next value on ch.
func next[T any](t *testing.T, ch <-chan T, who string, within time.Duration) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(within):
		t.Fatalf("%s was told nothing within %s", who, within)
	}
	panic("unreachable")
}

// none checks that nothing is waiting on ch. Callers first make a round
// trip on the connection, or wait for a later frame on every path, so that
// anything wrongly sent would already be here.
func none[T any](t *testing.T, ch <-chan T, who string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("%s was told %+v, want nothing", who, v)
	default:
	}
}

func nextPresence(t *testing.T, cl *client.Client, who string, within time.Duration) client.Presence {
	t.Helper()
	return next(t, cl.Presence(), who, within)
}

// presenceOf waits up to within for a presence event of user on cl that
// says online, skipping events of other users.
func presenceOf(t *testing.T, cl *client.Client, who, user string, online bool, within time.Duration) client.Presence {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case p := <-cl.Presence():
			if p.User != user {
				continue
			}
			if p.Online != online {
				t.Fatalf("%s was told %s is online=%v, want online=%v", who, user, p.Online, online)
			}
			return p
		case <-deadline:
			t.Fatalf("%s was not told within %s that %s is online=%v", who, within, user, online)
		}
	}
}

func TestWatchersAreToldOfPresenceAcrossNodes(t *testing.T) {
	c := testcluster.Start(t, 3, nil)
	ctx := ctxFor(t)
	carol := c.Dial(0, "carol")
	if err := carol.Watch(ctx, "bob", "nobody"); err != nil {
		t.Fatal(err)
	}
	// One state per user at once: neither has ever connected.
	got := map[string]client.Presence{}
	for range 2 {
		p := nextPresence(t, carol, "carol", 2*time.Second)
		got[p.User] = p
	}
	for _, u := range []string{"bob", "nobody"} {
		if p, ok := got[u]; !ok || p.Online || p.LastSeen != 0 {
			t.Fatalf("carol's first word of %s: %+v (%v), want offline, last_seen 0", u, p, ok)
		}
	}

	bob := c.Dial(2, "bob")
	presenceOf(t, carol, "carol", "bob", true, time.Second)
	bobPhone := c.Dial(1, "bob")
	closed := time.Now()
	bob.Close()
	bobPhone.Close()
	p := presenceOf(t, carol, "carol", "bob", false, 4*time.Second)
	if p.LastSeen < closed.UnixMilli() {
		t.Fatalf("last_seen %d is before bob's connections closed (%d)", p.LastSeen, closed.UnixMilli())
	}
	if waited := time.Since(closed); waited < 3*time.Second-100*time.Millisecond {
		t.Fatalf("offline was announced %s after the close, want no sooner than 3 s", waited)
	}

	// A second watcher on the same node gets the state it knows, at once.
	carolPhone := c.Dial(0, "carol")
	if err := carolPhone.Watch(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if p := nextPresence(t, carolPhone, "carol's phone", time.Second); p.User != "bob" || p.Online || p.LastSeen < closed.UnixMilli() {
		t.Fatalf("carol's phone was told %+v, want bob offline since %d", p, closed.UnixMilli())
	}

	// Unwatched: nothing more.
	if err := carol.Unwatch(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	c.Dial(1, "bob")
	presenceOf(t, carolPhone, "carol's phone", "bob", true, time.Second)
	if err := carol.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	none(t, carol.Presence(), "carol after unwatching bob")
}

func TestWatchPastMaxWatchIsBadRequest(t *testing.T) {
	c := testcluster.Start(t, 1, func(_ int, cfg *node.Config) { cfg.MaxWatch = 3 })
	ctx := ctxFor(t)
	carol := c.Dial(0, "carol")
	if err := carol.Watch(ctx, "a", "b", "a"); err != nil {
		t.Fatal(err)
	}
	var e *client.Error
	if err := carol.Watch(ctx, "c", "d"); !errors.As(err, &e) || e.Code != protocol.CodeBadRequest {
		t.Fatalf("a watch past --max-watch: %v, want bad_request", err)
	}
	// Watching a user again costs nothing; unwatching makes room.
	if err := carol.Watch(ctx, "a", "c"); err != nil {
		t.Fatalf("a third user, and one watched already: %v", err)
	}
	if err := carol.Unwatch(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := carol.Watch(ctx, "d"); err != nil {
		t.Fatalf("a watch after an unwatch made room: %v", err)
	}
	if got := c.Counter(0, "shard_watches"); got != 3 {
		t.Fatalf("shard_watches is %v, want 3", got)
	}
}

// A change of one user's presence costs one node-to-node message per node
// whose connections watch the user, however many watch there: here 1,000
// watchers over 3 nodes.
func TestPresenceCostsOneMessagePerWatchingNode(t *testing.T) {
	c := testcluster.Start(t, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const watchers = 1000
	conns := make([]*client.Client, watchers)
	var wg sync.WaitGroup
	errs := make(chan error, watchers)
	dialing := make(chan struct{}, 32) // dials at once: a busy box's handshakes stay within their 5 s
	for i := range watchers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dialing <- struct{}{}
			defer func() { <-dialing }()
			cl, err := client.Dial(ctx, client.Options{URL: c.URL(i % 3), User: fmt.Sprintf("w%d", i)})
			if err != nil {
				errs <- err
				return
			}
			conns[i] = cl
			if err := cl.Watch(ctx, "bob"); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, cl := range conns {
		t.Cleanup(func() { cl.Close() })
	}
	// Everyone has been told bob is offline.
	for i, cl := range conns {
		if p := nextPresence(t, cl, fmt.Sprintf("w%d", i), 5*time.Second); p.Online {
			t.Fatalf("w%d was told %+v", i, p)
		}
	}
	before := c.CounterAll("shard_peer_messages_sent_total", "kind=presence")
	events := c.CounterAll("shard_presence_events_total", "to=connection")
	c.Dial(0, "bob")
	for i, cl := range conns {
		if p := nextPresence(t, cl, fmt.Sprintf("w%d", i), 5*time.Second); !p.Online {
			t.Fatalf("w%d was told %+v, want bob online", i, p)
		}
	}
	sent := c.CounterAll("shard_peer_messages_sent_total", "kind=presence") - before
	// The owner is one of the 3 watching nodes: it tells itself for free.
	if sent > 2 {
		t.Fatalf("bob coming online cost %v presence messages between nodes, want at most 2 (one per other watching node)", sent)
	}
	if n := c.CounterAll("shard_presence_events_total", "to=connection") - events; n != watchers {
		t.Fatalf("%v presence frames written, want %d", n, watchers)
	}
	t.Logf("one change, %d watchers on 3 nodes: %v node-to-node presence messages", watchers, sent)
}

// Typing reaches the recipient's connections and never the sending one, is
// never stored, and a burst is forwarded once per 2 s.
func TestTypingReachesRecipientsButNotTheSender(t *testing.T) {
	c := testcluster.Start(t, 3, nil)
	ctx := ctxFor(t)
	alice := c.Dial(0, "alice")
	alicePhone := c.Dial(0, "alice")
	bob := c.Dial(1, "bob")
	bobPhone := c.Dial(2, "bob")

	if err := alice.Typing(ctx, "bob"); err != nil {
		t.Fatalf("typing with an id: %v, want ok", err)
	}
	for _, cl := range []*client.Client{bob, bobPhone} {
		if ev := nextTyping(t, cl, "bob"); ev.From != "alice" || ev.To != "bob" {
			t.Fatalf("bob was told %+v, want alice typing to bob", ev)
		}
	}
	// To oneself: one's other connections, never the sending one.
	if err := alice.Typing(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if ev := nextTyping(t, alicePhone, "alice's phone"); ev.From != "alice" || ev.To != "alice" {
		t.Fatalf("alice's phone was told %+v", ev)
	}
	sendOK(t, alicePhone, "alice", "marker", protocol.StatusDelivered)
	recvMsg(t, alice, "alice")
	none(t, alice.TypingEvents(), "alice, the sending connection")

	// A room: its members but the sending connection.
	for _, cl := range []*client.Client{alice, alicePhone, bob} {
		if err := cl.Join(ctx, "lobby"); err != nil {
			t.Fatal(err)
		}
	}
	if err := alice.TypingRoom(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}
	for _, who := range []struct {
		cl   *client.Client
		name string
	}{{alicePhone, "alice's phone"}, {bob, "bob"}} {
		if ev := nextTyping(t, who.cl, who.name); ev.From != "alice" || ev.Room != "lobby" {
			t.Fatalf("%s was told %+v, want alice typing in lobby", who.name, ev)
		}
	}
	if _, err := alicePhone.SendRoom(ctx, "lobby", "marker"); err != nil {
		t.Fatal(err)
	}
	recvMsg(t, alice, "alice")
	none(t, alice.TypingEvents(), "alice, the sending connection")
	var e *client.Error
	if err := bobPhone.TypingRoom(ctx, "lobby"); !errors.As(err, &e) || e.Code != protocol.CodeNotMember {
		t.Fatalf("typing in a room not joined: %v, want not_member", err)
	}
	if err := bobPhone.TypingGroup(ctx, "team"); !errors.As(err, &e) || e.Code != protocol.CodeBadRequest {
		t.Fatalf("typing to a group without a store: %v, want bad_request", err)
	}
}

func nextTyping(t *testing.T, cl *client.Client, who string) client.Typing {
	t.Helper()
	return next(t, cl.TypingEvents(), who, 5*time.Second)
}

// A burst of 50 typing frames in 1 s is forwarded once; the next goes no
// sooner than 2 s after the first. Typing is not stored: the inbox does not
// move.
func TestTypingBurstIsForwardedOncePerTwoSecondsAndNeverStored(t *testing.T) {
	c := withData(t)
	ctx := ctxFor(t)
	alice := c.Dial(0, "alice")
	bob := c.Dial(0, "bob")
	sendOK(t, alice, "bob", "first", protocol.StatusDelivered)
	recvMsg(t, bob, "bob")
	before, err := bob.Sync(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(20 * time.Millisecond) // 50 frames in 1 s: a burst, not a wait
	defer tick.Stop()
	start := time.Now()
	for i := range 50 {
		if err := alice.SendAsync(client.Frame{Type: protocol.TypeTyping, To: "bob"}, nil); err != nil {
			t.Fatalf("typing %d: %v", i, err)
		}
		<-tick.C
	}
	// A message from the same connection comes after every typing frame
	// forwarded before it.
	sendOK(t, alice, "bob", "after the burst", protocol.StatusDelivered)
	if m := recvMsg(t, bob, "bob"); m.Body != "after the burst" {
		t.Fatalf("bob got %q", m.Body)
	}
	got := 0
	for len(bob.TypingEvents()) > 0 {
		<-bob.TypingEvents()
		got++
	}
	if got != 1 {
		t.Fatalf("a burst of 50 typing frames in %s was forwarded %d times, want once", time.Since(start).Round(time.Millisecond), got)
	}
	forwarded, dropped := c.Counter(0, "shard_typing_total", "result=forwarded"), c.Counter(0, "shard_typing_total", "result=dropped")
	if forwarded != 1 || dropped != 49 {
		t.Fatalf("shard_typing_total: forwarded %v, dropped %v; want 1 and 49", forwarded, dropped)
	}
	// Typing on: the next one forwarded comes 2 s after the first.
	var second time.Time
	wait.For(t, 5*time.Second, 50*time.Millisecond, func() error {
		if err := alice.Typing(ctx, "bob"); err != nil {
			return err
		}
		select {
		case <-bob.TypingEvents():
			second = time.Now()
			return nil
		case <-time.After(100 * time.Millisecond):
			return errors.New("no second typing event yet")
		}
	})
	if gap := second.Sub(start); gap < 2*time.Second {
		t.Fatalf("a second typing event %s after the first, want at least 2 s", gap)
	}
	after, err := bob.Sync(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if after.Last != before.Last+1 {
		t.Fatalf("bob's inbox moved from %d to %d, want one more: the message after the burst, typing is not stored", before.Last, after.Last)
	}
	if n := c.Counter(0, "shard_deliveries_total"); n != 2 {
		t.Fatalf("shard_deliveries_total is %v, want 2 (the messages; typing is not a msg delivery)", n)
	}
}

// A group's typing reaches its members as its messages do, the sender's
// other connections included, never the sending one; a non-member is
// refused; and the group's stream does not move.
func TestTypingInAGroupReachesItsMembers(t *testing.T) {
	c := withData(t)
	ctx := ctxFor(t)
	alice, alicePhone := c.Dial(0, "alice"), c.Dial(0, "alice")
	bob, eve := c.Dial(0, "bob"), c.Dial(0, "eve")
	if _, err := alice.CreateGroup(ctx, "team", "bob"); err != nil {
		t.Fatal(err)
	}
	recvMsg(t, bob, "bob") // the created event
	recvMsg(t, alicePhone, "alice's phone")
	if err := alice.TypingGroup(ctx, "team"); err != nil {
		t.Fatalf("typing to a group: %v, want ok", err)
	}
	for _, who := range []struct {
		c    *client.Client
		name string
	}{{bob, "bob"}, {alicePhone, "alice's phone"}} {
		if ev := nextTyping(t, who.c, who.name); ev.From != "alice" || ev.Group != "team" {
			t.Fatalf("%s was told %+v, want alice typing in team", who.name, ev)
		}
	}
	if _, err := alicePhone.SendGroup(ctx, "team", "marker"); err != nil {
		t.Fatal(err)
	}
	recvMsg(t, alice, "alice")
	none(t, alice.TypingEvents(), "alice, the sending connection")
	var e *client.Error
	if err := eve.TypingGroup(ctx, "team"); !errors.As(err, &e) || e.Code != protocol.CodeNotMember {
		t.Fatalf("typing to a group one is not in: %v, want not_member", err)
	}
	if err := eve.TypingGroup(ctx, "nosuchgroup"); !errors.As(err, &e) || e.Code != protocol.CodeNotMember {
		t.Fatalf("typing to a group that does not exist: %v, want not_member", err)
	}
	if ack, err := bob.SyncGroup(ctx, "team", 0); err != nil || ack.Last != 2 {
		t.Fatalf("the group's stream: %+v %v, want last 2 (created, marker): typing is not stored", ack, err)
	}
}

// BenchmarkPresence measures, over b.N users watched by carol on another
// node, how long after a user starts connecting carol is told it is online
// (the dial, the registration at its owner and the owner's word to carol's
// node: "dial"), the same from the user's welcome ("welcome": it can be
// negative, the owner is told before the welcome goes out), and how much
// longer than its 3 s the offline takes once they all close ("offline").
func BenchmarkPresence(b *testing.B) {
	c := testcluster.Start(b, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	carol, err := client.Dial(ctx, client.Options{URL: c.URL(0), User: "carol", MessageBuffer: b.N + 1})
	if err != nil {
		b.Fatal(err)
	}
	defer carol.Close()
	users := make([]string, b.N)
	for i := range users {
		users[i] = fmt.Sprintf("lat%d", i)
	}
	if err := carol.Watch(ctx, users...); err != nil {
		b.Fatal(err)
	}
	for range users {
		<-carol.Presence()
	}
	var fromDial, fromWelcome, offline []time.Duration
	conns := make([]*client.Client, len(users))
	b.ResetTimer()
	for i, u := range users {
		dialed := time.Now()
		if conns[i], err = client.Dial(ctx, client.Options{URL: c.URL(1 + i%2), User: u}); err != nil {
			b.Fatal(err)
		}
		welcomed := time.Now()
		p := <-carol.Presence()
		if p.User != u || !p.Online {
			b.Fatalf("told %+v, want %s online", p, u)
		}
		fromDial, fromWelcome = append(fromDial, p.Received.Sub(dialed)), append(fromWelcome, p.Received.Sub(welcomed))
	}
	closed := make(map[string]time.Time, len(users))
	for i, cl := range conns {
		closed[users[i]] = time.Now()
		cl.Close()
	}
	for range users {
		p := <-carol.Presence()
		offline = append(offline, p.Received.Sub(closed[p.User])-3*time.Second)
	}
	b.StopTimer()
	for _, m := range []struct {
		name string
		d    []time.Duration
	}{{"dial", fromDial}, {"welcome", fromWelcome}, {"offline", offline}} {
		sort.Slice(m.d, func(i, j int) bool { return m.d[i] < m.d[j] })
		b.ReportMetric(float64(m.d[len(m.d)/2].Microseconds())/1000, m.name+"-p50-ms")
		b.ReportMetric(float64(m.d[len(m.d)*99/100].Microseconds())/1000, m.name+"-p99-ms")
	}
}
