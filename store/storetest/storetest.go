// Package storetest is the conformance suite of the message store: every
// engine runs it, so that what one engine promises, all do: streams and
// keys (this file), groups (groups.go), read state and unread counts
// (conversations.go), last seen (presence.go). It also holds the
// benchmarks the engines share: appends, reads, group appends and
// conversation lists (bench.go).
// It never reaches into an engine: it uses store.Open and the Store
// interface only.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/store"
)

// Engine is the engine under test.
type Engine struct {
	// Fresh returns a URL of new, empty storage for store.Open.
	Fresh func(t testing.TB) string
	// Shared: several stores may be open on one URL at once, as the nodes
	// of a cluster share one database. The suite then appends through
	// several at once.
	Shared bool
}

// Clock is a settable clock for Options.Now.
type Clock struct{ ns atomic.Int64 }

// NewClock starts at a fixed, realistic time.
func NewClock() *Clock {
	c := &Clock{}
	c.ns.Store(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}

func (c *Clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *Clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
func (c *Clock) Millis() int64           { return c.Now().UnixMilli() }

// suite is one test's view of an engine.
type suite struct {
	t     *testing.T
	e     Engine
	url   string
	clock *Clock
	ctx   context.Context
}

func newSuite(t *testing.T, e Engine) *suite {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return &suite{t: t, e: e, url: e.Fresh(t), clock: NewClock(), ctx: ctx}
}

// open opens a store (a node) on the test's storage; the test closes it.
func (s *suite) open(opts store.Options) store.Store {
	s.t.Helper()
	if opts.Now == nil {
		opts.Now = s.clock.Now
	}
	if opts.TrimInterval == 0 {
		opts.TrimInterval = -1 // the tests trim when they mean to
	}
	st, err := store.Open(s.ctx, s.url, opts)
	if err != nil {
		s.t.Fatalf("open %s: %v", s.url, err)
	}
	s.t.Cleanup(func() { st.Close() })
	return st
}

// nodes opens n stores on the test's storage when the engine is shared,
// one otherwise.
func (s *suite) nodes(n int, opts store.Options) []store.Store {
	if !s.e.Shared {
		n = 1
	}
	out := make([]store.Store, n)
	for i := range out {
		out[i] = s.open(opts)
	}
	return out
}

var mids atomic.Int64

func direct(from, to, body string) store.Append {
	return store.Append{Mid: "m" + strconv.FormatInt(mids.Add(1), 36), From: from, To: to, Body: body, TS: time.Now().UnixMilli()}
}

func room(from, room, body string) store.Append {
	return store.Append{Mid: "m" + strconv.FormatInt(mids.Add(1), 36), From: from, Room: room, Body: body, TS: time.Now().UnixMilli()}
}

func (s *suite) append(st store.Store, a store.Append) store.Appended {
	s.t.Helper()
	res, err := st.Append(s.ctx, a)
	if err != nil {
		s.t.Fatalf("append %+v: %v", a, err)
	}
	return res
}

// readAll reads stream in pages of limit and checks the page contract on
// the way.
func (s *suite) readAll(st store.Store, stream store.Stream, limit int) (msgs []store.Message, last int64) {
	s.t.Helper()
	after := int64(0)
	for {
		page, l, more, err := st.Read(s.ctx, stream, after, limit)
		if err != nil {
			s.t.Fatalf("read %s after %d: %v", stream, after, err)
		}
		if len(page) > limit {
			s.t.Fatalf("read %s: %d messages for limit %d", stream, len(page), limit)
		}
		if more && len(page) == 0 {
			s.t.Fatalf("read %s after %d: empty page with more", stream, after)
		}
		for _, m := range page {
			if m.Seq <= after {
				s.t.Fatalf("read %s after %d: got offset %d", stream, after, m.Seq)
			}
			if m.Stream != stream {
				s.t.Fatalf("read %s: message of stream %s", stream, m.Stream)
			}
			after = m.Seq
		}
		msgs = append(msgs, page...)
		last = l
		if !more {
			return msgs, last
		}
	}
}

// Run runs the conformance suite against e.
func Run(t *testing.T, e Engine) {
	tests := []struct {
		name string
		f    func(*suite)
	}{
		{"OffsetsAreDenseUnderConcurrentAppends", testDenseOffsets},
		{"DirectMessageGoesToBothInboxesRoomMessageToItsStream", testStreams},
		{"ResendWithKeyStoresNothingTwice", testIdempotency},
		{"ConcurrentResendsOfOneKeyStoreOnce", testConcurrentKey},
		{"KeyIsNewAgainAfterItsWindow", testKeyWindow},
		{"ReadPagesInOrder", testReadPages},
		{"RetentionByCountKeepsNewestAndTheirOffsets", testRetentionCount},
		{"RetentionByAge", testRetentionAge},
		{"AppendsProceedWhileTrimming", testTrimConcurrent},
		{"RetentionRunsInTheBackground", testBackgroundRetention},
		{"CloseRefusesAndReopenKeepsEverything", testClose},
		{"InvalidAppendsAreRefused", testInvalid},

		{"GroupLifecycleWithItsEvents", testGroupLifecycle},
		{"GroupSendNeedsMembershipAndKeepsKeys", testGroupSend},
		{"MemberReadsFromTheEventThatAddedIt", testMemberReadsFromItsJoin},
		{"LastAdminLeavingHandsOver", testAdminHandOver},
		{"LastMemberLeavingEndsTheGroup", testLastMemberLeaves},
		{"GroupBoundsChangeNothing", testGroupBounds},
		{"MalformedGroupRequestsAreRefused", testGroupMalformed},
		{"SendRacingRemovalIsWhollyBeforeOrAfter", testSendRacingRemoval},
		{"GroupOffsetsAreDenseAcrossNodes", testGroupOffsetsDense},

		{"UnreadCountsAcrossDirectAndGroupTraffic", testUnreadCounts},
		{"ReceiptNamesThePeersOwnOffset", testReceiptNamesPeerOffset},
		{"UnreadCountsUnderConcurrentTraffic", testUnreadUnderConcurrentTraffic},
		{"RetentionKeepsUnreadCountsRight", testRetentionKeepsUnreadRight},
		{"ConversationListIsBounded", testConversationsBound},
		{"GroupsAndReadStateSurviveReopening", testReadStatePersists},

		{"LastSeenOnlyMovesForward", testLastSeen},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.f(newSuite(t, e))
		})
	}
}

// testDenseOffsets: writers on several nodes append at once to one room,
// to one user's inbox from many senders, and back; every stream ends with
// each offset 1..N exactly once, read back in order.
func testDenseOffsets(s *suite) {
	nodes := s.nodes(3, store.Options{})
	const writers, per = 8, 40
	type got struct {
		stream store.Stream
		seq    int64
		mid    string
	}
	var (
		mu  sync.Mutex
		all []got
		wg  sync.WaitGroup
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := nodes[w%len(nodes)]
			peer := "u" + strconv.Itoa(w)
			for i := range per {
				var a store.Append
				switch i % 3 {
				case 0:
					a = room(peer, "lobby", "hello")
				case 1:
					a = direct(peer, "bob", "to bob")
				default:
					a = direct("bob", peer, "from bob") // locks bob's and peer's inboxes the other way round
				}
				res, err := st.Append(s.ctx, a)
				if err != nil {
					s.t.Errorf("append: %v", err)
					return
				}
				first, second := inboxes(a)
				mu.Lock()
				all = append(all, got{first, res.Seq, a.Mid})
				if a.Room == "" {
					all = append(all, got{second, res.SenderSeq, a.Mid})
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if s.t.Failed() {
		return
	}
	byStream := make(map[store.Stream]map[int64]string)
	for _, g := range all {
		m := byStream[g.stream]
		if m == nil {
			m = make(map[int64]string)
			byStream[g.stream] = m
		}
		if prev, dup := m[g.seq]; dup {
			s.t.Fatalf("%s: offset %d given twice (%s and %s)", g.stream, g.seq, prev, g.mid)
		}
		m[g.seq] = g.mid
	}
	for stream, m := range byStream {
		n := int64(len(m))
		for seq := int64(1); seq <= n; seq++ {
			if _, ok := m[seq]; !ok {
				s.t.Fatalf("%s: %d messages but offset %d missing: a reader would see a gap", stream, n, seq)
			}
		}
		msgs, last := s.readAll(nodes[0], stream, 7)
		if last != n || int64(len(msgs)) != n {
			s.t.Fatalf("%s: read %d messages, last %d; want %d", stream, len(msgs), last, n)
		}
		for i, msg := range msgs {
			if msg.Seq != int64(i+1) || msg.Mid != m[msg.Seq] {
				s.t.Fatalf("%s: position %d holds offset %d mid %s; want offset %d mid %s", stream, i, msg.Seq, msg.Mid, i+1, m[int64(i+1)])
			}
		}
	}
	if want := writers * per / 3; len(byStream[store.RoomStream("lobby")]) < want {
		s.t.Fatalf("lobby has %d messages, want at least %d", len(byStream[store.RoomStream("lobby")]), want)
	}
}

// inboxes names the streams of a: the one Seq is in, and the sender's.
func inboxes(a store.Append) (store.Stream, store.Stream) {
	if a.Room != "" {
		return store.RoomStream(a.Room), store.Stream{}
	}
	return store.Inbox(a.To), store.Inbox(a.From)
}

func testStreams(s *suite) {
	st := s.open(store.Options{})
	a1 := direct("alice", "bob", "hi bob")
	r1 := s.append(st, a1)
	if r1.Seq != 1 || r1.SenderSeq != 1 || r1.Duplicate || r1.Mid != a1.Mid || r1.TS != a1.TS {
		s.t.Fatalf("first alice->bob: %+v, want seq 1 sender seq 1", r1)
	}
	r2 := s.append(st, direct("bob", "alice", "hi alice"))
	if r2.Seq != 2 || r2.SenderSeq != 2 {
		s.t.Fatalf("bob->alice: %+v, want seq 2 (alice's inbox) sender seq 2 (bob's)", r2)
	}
	for _, user := range []string{"alice", "bob"} {
		msgs, last := s.readAll(st, store.Inbox(user), 10)
		if last != 2 || len(msgs) != 2 {
			s.t.Fatalf("%s's inbox: %d messages, last %d; want both messages", user, len(msgs), last)
		}
		m := msgs[0]
		if m.Mid != a1.Mid || m.From != "alice" || m.To != "bob" || m.Room != "" || m.Body != "hi bob" || m.TS != a1.TS || m.Seq != 1 {
			s.t.Fatalf("%s's inbox holds %+v, want alice's message at 1", user, m)
		}
	}
	self := s.append(st, direct("carol", "carol", "note to self"))
	if self.Seq != 1 || self.SenderSeq != 0 {
		s.t.Fatalf("carol->carol: %+v, want seq 1 and no sender copy", self)
	}
	if msgs, _ := s.readAll(st, store.Inbox("carol"), 10); len(msgs) != 1 {
		s.t.Fatalf("carol's inbox has %d messages, want the note once", len(msgs))
	}
	api := direct("system", "dave", "welcome")
	api.NoSenderCopy = true
	if res := s.append(st, api); res.Seq != 1 || res.SenderSeq != 0 {
		s.t.Fatalf("api send: %+v, want seq 1 and no sender copy", res)
	}
	if msgs, last := s.readAll(st, store.Inbox("system"), 10); len(msgs) != 0 || last != 0 {
		s.t.Fatalf("system's inbox has %d messages (last %d); NoSenderCopy wants none", len(msgs), last)
	}
	rm := room("alice", "lobby", "hi all")
	if res := s.append(st, rm); res.Seq != 1 || res.SenderSeq != 0 {
		s.t.Fatalf("room message: %+v, want seq 1 in the room, no sender copy", res)
	}
	msgs, last := s.readAll(st, store.RoomStream("lobby"), 10)
	if last != 1 || len(msgs) != 1 || msgs[0].Room != "lobby" || msgs[0].To != "" || msgs[0].From != "alice" || msgs[0].Mid != rm.Mid {
		s.t.Fatalf("lobby: %+v last %d, want alice's room message", msgs, last)
	}
	if _, last := s.readAll(st, store.Inbox("alice"), 10); last != 2 {
		s.t.Fatalf("alice's inbox last %d after a room message, want 2: a room message goes to the room only", last)
	}
	// A user and a room may share a name: they are different streams.
	if res := s.append(st, room("alice", "bob", "room named bob")); res.Seq != 1 {
		s.t.Fatalf("room bob: seq %d, want 1 (not bob's inbox)", res.Seq)
	}
}

func testIdempotency(s *suite) {
	nodes := s.nodes(2, store.Options{})
	n1, n2 := nodes[0], nodes[len(nodes)-1]
	a := direct("alice", "bob", "once")
	a.Key = "k-1"
	first := s.append(n1, a)
	if first.Duplicate {
		s.t.Fatalf("first send with a key is a duplicate: %+v", first)
	}
	again := a
	again.Mid, again.TS = "other-mid", a.TS+5 // a resend gets a new mid from its node
	dup := s.append(n2, again)
	if !dup.Duplicate || dup.Seq != first.Seq || dup.SenderSeq != first.SenderSeq || dup.Mid != a.Mid || dup.TS != a.TS || dup.Answer != nil {
		s.t.Fatalf("resend: %+v, want a duplicate with the first append's %+v and no answer yet", dup, first)
	}
	for _, user := range []string{"alice", "bob"} {
		if msgs, last := s.readAll(n1, store.Inbox(user), 10); len(msgs) != 1 || last != 1 {
			s.t.Fatalf("%s's inbox has %d messages (last %d) after a resend, want 1", user, len(msgs), last)
		}
	}
	if err := n1.RecordAnswers(s.ctx, []store.KeyedAnswer{{From: "alice", Key: "k-1", Answer: store.Answer{Status: "delivered"}}}); err != nil {
		s.t.Fatal(err)
	}
	dup = s.append(n2, again)
	if !dup.Duplicate || dup.Answer == nil || *dup.Answer != (store.Answer{Status: "delivered"}) {
		s.t.Fatalf("resend after the answer: %+v, want the recorded answer delivered", dup)
	}
	// Another user's same key is another message.
	b := direct("bob", "alice", "mine")
	b.Key = "k-1"
	if res := s.append(n1, b); res.Duplicate || res.Seq != 2 {
		s.t.Fatalf("bob's k-1: %+v, want a new message at 2", res)
	}
	// A room message's answer, recipients included, recorded with
	// another's at once, beside an answer for a key never seen, which is
	// ignored.
	r := room("alice", "lobby", "hi")
	r.Key = "k-2"
	rf := s.append(n1, r)
	c := direct("carol", "bob", "also")
	c.Key = "k-3"
	cf := s.append(n1, c)
	if err := n2.RecordAnswers(s.ctx, []store.KeyedAnswer{
		{From: "alice", Key: "k-2", Answer: store.Answer{Status: "sent", Recipients: 7}},
		{From: "alice", Key: "never-sent", Answer: store.Answer{Status: "stored"}},
		{From: "carol", Key: "k-3", Answer: store.Answer{Status: "stored"}},
	}); err != nil {
		s.t.Fatalf("three answers at once, one for a key never seen: %v", err)
	}
	rd := s.append(n1, r)
	if !rd.Duplicate || rd.Seq != rf.Seq || rd.Answer == nil || *rd.Answer != (store.Answer{Status: "sent", Recipients: 7}) {
		s.t.Fatalf("room resend: %+v, want duplicate of %+v answered sent 7", rd, rf)
	}
	if cd := s.append(n2, c); !cd.Duplicate || cd.Seq != cf.Seq || cd.Answer == nil || *cd.Answer != (store.Answer{Status: "stored"}) {
		s.t.Fatalf("carol's resend: %+v, want duplicate of %+v answered stored", cd, cf)
	}
	u := direct("alice", "carol", "x")
	u.Key = "never-sent"
	if res := s.append(n1, u); res.Duplicate || res.Answer != nil {
		s.t.Fatalf("first send of a key answered before: %+v, want a new message", res)
	}
}

// testConcurrentKey: a client retries on another node while its first
// send is still in flight; exactly one is stored.
func testConcurrentKey(s *suite) {
	nodes := s.nodes(3, store.Options{})
	const tries = 12
	results := make([]store.Appended, tries)
	var wg sync.WaitGroup
	for i := range tries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := direct("alice", "bob", "retry me")
			a.Key = "same"
			res, err := nodes[i%len(nodes)].Append(s.ctx, a)
			if err != nil {
				s.t.Errorf("append: %v", err)
			}
			results[i] = res
		}()
	}
	wg.Wait()
	fresh := 0
	for _, r := range results {
		if !r.Duplicate {
			fresh++
		}
		if r.Seq != 1 || r.Mid != results[0].Mid {
			s.t.Fatalf("retries got %+v and %+v: want one message at offset 1", r, results[0])
		}
	}
	if fresh != 1 {
		s.t.Fatalf("%d of %d concurrent sends with one key were stored, want 1", fresh, tries)
	}
	if msgs, _ := s.readAll(nodes[0], store.Inbox("bob"), 50); len(msgs) != 1 {
		s.t.Fatalf("bob's inbox holds %d messages, want 1", len(msgs))
	}
}

func testKeyWindow(s *suite) {
	const window = time.Minute
	st := s.open(store.Options{KeyWindow: window})
	a := direct("alice", "bob", "hi")
	a.Key = "k"
	first := s.append(st, a)
	s.clock.Advance(window - time.Second)
	if res := s.append(st, a); !res.Duplicate {
		s.t.Fatalf("resend within the window: %+v, want a duplicate", res)
	}
	s.clock.Advance(2 * time.Second)
	second := s.append(st, a)
	if second.Duplicate || second.Seq != first.Seq+1 {
		s.t.Fatalf("send after the window: %+v, want a new message at %d", second, first.Seq+1)
	}
	// Expiring the first use must not forget the second.
	removed, err := st.Trim(s.ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	if res := s.append(st, a); !res.Duplicate || res.Seq != second.Seq {
		s.t.Fatalf("resend of the renewed key after a trim (removed %d): %+v, want a duplicate of %d", removed, res, second.Seq)
	}
	s.clock.Advance(window + time.Second)
	if removed, err = st.Trim(s.ctx); err != nil || removed < 1 {
		s.t.Fatalf("trim after the window removed %d keys (%v), want the expired one", removed, err)
	}
	if res := s.append(st, a); res.Duplicate {
		s.t.Fatalf("send after the window and a trim: %+v, want new", res)
	}
}

func testReadPages(s *suite) {
	st := s.open(store.Options{})
	const n = 25
	mids := make([]string, n+1)
	for i := 1; i <= n; i++ {
		a := room("alice", "lobby", "m"+strconv.Itoa(i))
		if res := s.append(st, a); res.Seq != int64(i) {
			s.t.Fatalf("append %d got offset %d", i, res.Seq)
		}
		mids[i] = a.Mid
	}
	lobby := store.RoomStream("lobby")
	for _, p := range []struct {
		after      int64
		limit      int
		from, to   int64
		more       bool
		wantLength int
	}{
		{0, 10, 1, 10, true, 10},
		{10, 10, 11, 20, true, 10},
		{20, 10, 21, 25, false, 5},
		{15, 10, 16, 25, false, 10},
		{-3, 1, 1, 1, true, 1},
		{24, 1, 25, 25, false, 1},
		{25, 10, 0, 0, false, 0},
		{1000, 10, 0, 0, false, 0},
	} {
		msgs, last, more, err := st.Read(s.ctx, lobby, p.after, p.limit)
		if err != nil {
			s.t.Fatal(err)
		}
		if last != n || more != p.more || len(msgs) != p.wantLength {
			s.t.Fatalf("read after %d limit %d: %d messages, last %d, more %v; want %d, %d, %v",
				p.after, p.limit, len(msgs), last, more, p.wantLength, n, p.more)
		}
		for i, m := range msgs {
			if m.Seq != p.from+int64(i) || m.Mid != mids[m.Seq] || m.Body != "m"+strconv.FormatInt(m.Seq, 10) {
				s.t.Fatalf("read after %d: position %d holds %+v, want offset %d", p.after, i, m, p.from+int64(i))
			}
		}
	}
	if msgs, last, more, err := st.Read(s.ctx, store.RoomStream("empty"), 0, 10); err != nil || len(msgs) != 0 || last != 0 || more {
		s.t.Fatalf("stream never written: %d messages, last %d, more %v, %v; want nothing, last 0", len(msgs), last, more, err)
	}
	if _, _, _, err := st.Read(s.ctx, lobby, 0, 0); !errors.Is(err, store.ErrInvalid) {
		s.t.Fatalf("limit 0: %v, want ErrInvalid", err)
	}
	if _, _, _, err := st.Read(s.ctx, store.Inbox("bad name"), 0, 10); !errors.Is(err, store.ErrInvalid) {
		s.t.Fatalf("malformed stream name: %v, want ErrInvalid", err)
	}
	// A page never exceeds MaxReadLimit, whatever the caller asks.
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range (store.MaxReadLimit + 10) / 10 {
				if _, err := st.Append(s.ctx, room("bob", "big", "x")); err != nil {
					s.t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	msgs, last, more, err := st.Read(s.ctx, store.RoomStream("big"), 0, 1<<20)
	if err != nil || len(msgs) != store.MaxReadLimit || !more || last != store.MaxReadLimit+10 {
		s.t.Fatalf("huge limit: %d messages, more %v, last %d, %v; want a page of MaxReadLimit (%d)", len(msgs), more, last, err, store.MaxReadLimit)
	}
}

func testRetentionCount(s *suite) {
	st := s.open(store.Options{MaxPerStream: 5})
	for range 12 {
		s.append(st, room("alice", "lobby", "x"))
	}
	for range 3 {
		s.append(st, room("alice", "quiet", "x"))
	}
	removed, err := st.Trim(s.ctx)
	if err != nil || removed != 7 {
		s.t.Fatalf("trim removed %d (%v), want the 7 oldest of the lobby", removed, err)
	}
	msgs, last := s.readAll(st, store.RoomStream("lobby"), 3)
	if last != 12 || len(msgs) != 5 || msgs[0].Seq != 8 || msgs[4].Seq != 12 {
		s.t.Fatalf("lobby after trim: %d messages from %d, last %d; want 8..12", len(msgs), first(msgs), last)
	}
	if msgs, _ := s.readAll(st, store.RoomStream("quiet"), 10); len(msgs) != 3 {
		s.t.Fatalf("a stream under the cap lost messages: %d left of 3", len(msgs))
	}
	if res := s.append(st, room("alice", "lobby", "x")); res.Seq != 13 {
		s.t.Fatalf("append after trim got %d, want 13: offsets never restart", res.Seq)
	}
	if removed, err := st.Trim(s.ctx); err != nil || removed != 1 {
		s.t.Fatalf("second trim removed %d (%v), want 1", removed, err)
	}
}

func first(msgs []store.Message) int64 {
	if len(msgs) == 0 {
		return 0
	}
	return msgs[0].Seq
}

func testRetentionAge(s *suite) {
	st := s.open(store.Options{MaxAge: time.Hour})
	old := s.clock.Millis() - 2*time.Hour.Milliseconds()
	for i := range 4 {
		a := direct("alice", "bob", "old")
		a.TS = old + int64(i)
		s.append(st, a)
	}
	for range 2 {
		a := direct("alice", "bob", "new")
		a.TS = s.clock.Millis()
		s.append(st, a)
	}
	removed, err := st.Trim(s.ctx)
	if err != nil || removed != 8 {
		s.t.Fatalf("trim removed %d (%v), want the 4 old messages from both inboxes", removed, err)
	}
	for _, user := range []string{"alice", "bob"} {
		msgs, last := s.readAll(st, store.Inbox(user), 10)
		if last != 6 || len(msgs) != 2 || msgs[0].Seq != 5 || msgs[0].Body != "new" {
			s.t.Fatalf("%s's inbox after trim: %d messages from %d, last %d; want 5 and 6", user, len(msgs), first(msgs), last)
		}
	}
	s.clock.Advance(2 * time.Hour)
	if removed, err := st.Trim(s.ctx); err != nil || removed != 4 {
		s.t.Fatalf("trim two hours later removed %d (%v), want the rest (4)", removed, err)
	}
	msgs, last, more, err := st.Read(s.ctx, store.Inbox("bob"), 0, 10)
	if err != nil || len(msgs) != 0 || last != 6 || more {
		s.t.Fatalf("emptied inbox: %d messages, last %d, more %v (%v); want none and last still 6", len(msgs), last, more, err)
	}
	if res := s.append(st, direct("carol", "bob", "later")); res.Seq != 7 {
		s.t.Fatalf("append to an emptied inbox got %d, want 7", res.Seq)
	}
}

// testTrimConcurrent: trims run over and over while nodes append; every
// append succeeds with dense offsets and the cap holds at the end.
func testTrimConcurrent(s *suite) {
	const keep = 10
	nodes := s.nodes(2, store.Options{MaxPerStream: keep})
	stop := make(chan struct{})
	trimmed := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				trimmed <- nil
				return
			default:
			}
			if _, err := nodes[0].Trim(s.ctx); err != nil {
				trimmed <- err
				return
			}
		}
	}()
	const writers, per = 6, 50
	var (
		mu   sync.Mutex
		seqs = map[string][]int64{}
		wg   sync.WaitGroup
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := "r" + strconv.Itoa(w%3)
			for range per {
				res, err := nodes[w%len(nodes)].Append(s.ctx, room("alice", name, "x"))
				if err != nil {
					s.t.Errorf("append while trimming: %v", err)
					return
				}
				mu.Lock()
				seqs[name] = append(seqs[name], res.Seq)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stop)
	if err := <-trimmed; err != nil {
		s.t.Fatalf("trim: %v", err)
	}
	if _, err := nodes[0].Trim(s.ctx); err != nil {
		s.t.Fatal(err)
	}
	for name, got := range seqs {
		slices.Sort(got)
		for i, seq := range got {
			if seq != int64(i+1) {
				s.t.Fatalf("%s: offsets %v...: want 1..%d without gap", name, got[:min(len(got), i+2)], len(got))
			}
		}
		n := int64(len(got))
		msgs, last := s.readAll(nodes[0], store.RoomStream(name), 4)
		if last != n || len(msgs) != keep || msgs[0].Seq != n-keep+1 {
			s.t.Fatalf("%s: %d messages from %d, last %d; want the newest %d of %d", name, len(msgs), first(msgs), last, keep, n)
		}
	}
}

func testBackgroundRetention(s *suite) {
	st := s.open(store.Options{MaxPerStream: 2, TrimInterval: 5 * time.Millisecond})
	for range 5 {
		s.append(st, room("alice", "lobby", "x"))
	}
	wait.For(s.t, 10*time.Second, 5*time.Millisecond, func() error {
		msgs, _, _, err := st.Read(s.ctx, store.RoomStream("lobby"), 0, 10)
		if err != nil {
			return err
		}
		if len(msgs) != 2 || msgs[0].Seq != 4 {
			return fmt.Errorf("lobby holds %d messages from %d; the background trimmer should leave 4 and 5", len(msgs), first(msgs))
		}
		return nil
	})
}

func testClose(s *suite) {
	st, err := store.Open(s.ctx, s.url, store.Options{Now: s.clock.Now, TrimInterval: -1})
	if err != nil {
		s.t.Fatal(err)
	}
	a := direct("alice", "bob", "kept")
	a.Key = "k"
	s.append(st, a)
	if err := st.RecordAnswers(s.ctx, []store.KeyedAnswer{{From: "alice", Key: "k", Answer: store.Answer{Status: "stored"}}}); err != nil {
		s.t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		s.t.Fatalf("close: %v", err)
	}
	if err := st.Close(); err != nil {
		s.t.Fatalf("second close: %v", err)
	}
	if _, err := st.Append(s.ctx, direct("alice", "bob", "late")); !errors.Is(err, store.ErrClosed) {
		s.t.Fatalf("append after close: %v, want ErrClosed", err)
	}
	if _, _, _, err := st.Read(s.ctx, store.Inbox("bob"), 0, 10); !errors.Is(err, store.ErrClosed) {
		s.t.Fatalf("read after close: %v, want ErrClosed", err)
	}
	if err := st.RecordAnswers(s.ctx, []store.KeyedAnswer{{From: "alice", Key: "k", Answer: store.Answer{Status: "x"}}}); !errors.Is(err, store.ErrClosed) {
		s.t.Fatalf("answer after close: %v, want ErrClosed", err)
	}
	again := s.open(store.Options{})
	msgs, last := s.readAll(again, store.Inbox("bob"), 10)
	if last != 1 || len(msgs) != 1 || msgs[0].Body != "kept" {
		s.t.Fatalf("after reopening: %d messages, last %d; want the message stored before close", len(msgs), last)
	}
	dup := s.append(again, a)
	if !dup.Duplicate || dup.Answer == nil || dup.Answer.Status != "stored" {
		s.t.Fatalf("resend after reopening: %+v, want the duplicate answered stored", dup)
	}
	if res := s.append(again, direct("carol", "bob", "next")); res.Seq != 2 {
		s.t.Fatalf("append after reopening got %d, want 2", res.Seq)
	}
}

func testInvalid(s *suite) {
	st := s.open(store.Options{})
	ok := direct("alice", "bob", "x")
	for name, mutate := range map[string]func(*store.Append){
		"no mid":          func(a *store.Append) { a.Mid = "" },
		"bad from":        func(a *store.Append) { a.From = "al ice" },
		"neither":         func(a *store.Append) { a.To = "" },
		"both":            func(a *store.Append) { a.Room = "lobby" },
		"bad to":          func(a *store.Append) { a.To = string(make([]byte, 65)) },
		"bad key":         func(a *store.Append) { a.Key = "k/1" },
		"empty body":      func(a *store.Append) { a.Body = "" },
		"bad room":        func(a *store.Append) { a.To, a.Room = "", "lob by" },
		"too long key id": func(a *store.Append) { a.Key = string(make([]byte, 65)) },
	} {
		a := ok
		mutate(&a)
		if _, err := st.Append(s.ctx, a); !errors.Is(err, store.ErrInvalid) {
			s.t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if msgs, last := s.readAll(st, store.Inbox("bob"), 10); len(msgs) != 0 || last != 0 {
		s.t.Fatalf("refused appends stored %d messages", len(msgs))
	}
}
