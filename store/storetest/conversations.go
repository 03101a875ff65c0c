package storetest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/shardchat/shard/store"
)

// The read state of issue 12, as store.ReadState documents it.

// at is a with the time ts.
func at(a store.Append, ts int64) store.Append {
	a.TS = ts
	return a
}

// conversations is user's list, and the same by "with:peer" and
// "group:name".
func (s *suite) conversations(st store.Store, user string) ([]store.Conversation, map[string]store.Conversation) {
	s.t.Helper()
	list, err := st.Conversations(s.ctx, user)
	if err != nil {
		s.t.Fatalf("conversations of %s: %v", user, err)
	}
	by := make(map[string]store.Conversation, len(list))
	for _, c := range list {
		by[convName(c)] = c
	}
	return list, by
}

func convName(c store.Conversation) string {
	if c.Group != "" {
		return "group:" + c.Group
	}
	return "with:" + c.With
}

func (s *suite) setRead(st store.Store, r store.ReadMark) store.ReadMarked {
	s.t.Helper()
	m, err := st.SetRead(s.ctx, r)
	if err != nil {
		s.t.Fatalf("set read %+v: %v", r, err)
	}
	return m
}

// testUnreadCounts: direct and group traffic among four users, with
// reads: every list is newest first, counts the others' messages and
// events after the read offset, and sending is reading.
func testUnreadCounts(s *suite) {
	st := s.open(store.Options{})
	s.append(st, at(direct("bob", "alice", "b1"), 1))
	s.append(st, at(direct("bob", "alice", "b2"), 2))
	s.append(st, at(direct("bob", "alice", "b3"), 3))
	s.append(st, at(direct("carol", "alice", "c1"), 4))
	s.append(st, at(direct("carol", "alice", "c2"), 5))
	create := changeOf("team", "dave", "", "alice", "bob")
	create.TS = 6
	s.change("create", st.CreateGroup, create)        // team 1
	s.append(st, at(toGroup("bob", "team", "g1"), 7)) // team 2
	reply := s.append(st, at(direct("alice", "bob", "reply"), 8))
	add := changeOf("team", "dave", "carol")
	add.TS = 9
	s.change("add carol", st.AddMember, add)                   // team 3
	hi := s.append(st, at(toGroup("alice", "team", "hi"), 10)) // team 4
	if reply.SenderSeq != 6 || hi.Seq != 4 {
		s.t.Fatalf("alice's reply at %d in her inbox, her group message at %d; the test wants 6 and 4", reply.SenderSeq, hi.Seq)
	}

	type want struct {
		name               string
		last, read, unread int64
		ts                 int64
		admin              bool
	}
	check := func(user string, wants ...want) {
		s.t.Helper()
		list, _ := s.conversations(st, user)
		if len(list) != len(wants) {
			s.t.Fatalf("%s's conversations: %+v; want %d", user, list, len(wants))
		}
		for i, w := range wants {
			c := list[i]
			if convName(c) != w.name || c.Last != w.last || c.Read != w.read || c.Unread != w.unread || c.TS != w.ts || c.Admin != w.admin {
				s.t.Fatalf("%s's conversation %d: %+v; want %+v", user, i, c, w)
			}
		}
	}
	check("alice",
		want{"group:team", 4, 4, 0, 10, false}, // her message read the group
		want{"with:bob", 6, 6, 0, 8, false},    // her reply read bob's three
		want{"with:carol", 5, 0, 2, 5, false})
	check("bob",
		want{"group:team", 4, 2, 2, 10, false}, // carol added, alice's hi
		want{"with:alice", 4, 3, 1, 8, false})  // alice's reply
	check("carol",
		want{"group:team", 4, 2, 2, 10, false}, // the event that added her, alice's hi
		want{"with:alice", 2, 2, 0, 5, false})
	check("dave", want{"group:team", 4, 3, 1, 10, true}) // the event he caused counts as read

	for _, c := range []struct {
		mark              store.ReadMark
		moved             bool
		read, peer, unrd  int64
		whatItSaysToUsers string
	}{
		{store.ReadMark{User: "alice", With: "carol", Seq: 4}, true, 4, 1, 1, "alice read c1 (carol's offset 1)"},
		{store.ReadMark{User: "alice", With: "carol", Seq: 3}, false, 4, 1, 1, "a lower offset is ignored"},
		{store.ReadMark{User: "alice", With: "carol", Seq: 99}, true, 5, 2, 0, "past the newest: read to the newest"},
		{store.ReadMark{User: "bob", Group: "team", Seq: 3}, true, 3, 0, 1, "bob read the added event"},
		{store.ReadMark{User: "bob", Group: "team", Seq: 2}, false, 3, 0, 1, "a lower offset is ignored"},
		{store.ReadMark{User: "bob", Group: "team", Seq: 100}, true, 4, 0, 0, "past the newest: read to the newest"},
		{store.ReadMark{User: "bob", With: "alice", Seq: 4}, true, 4, 6, 0, "bob read alice's reply (her offset 6)"},
		{store.ReadMark{User: "carol", With: "zed", Seq: 4}, false, 0, 0, 0, "no conversation: nothing to read"},
	} {
		m := s.setRead(st, c.mark)
		if m.Moved != c.moved || m.Read != c.read || m.PeerSeq != c.peer || m.Unread != c.unrd {
			s.t.Fatalf("%+v: %+v; want moved %v, read %d, peer offset %d, unread %d (%s)",
				c.mark, m, c.moved, c.read, c.peer, c.unrd, c.whatItSaysToUsers)
		}
		if c.mark.Group != "" && m.Version != s.groupInfo(st, c.mark.Group).Version {
			s.t.Fatalf("%+v: membership version %d, want the group's, %d", c.mark, m.Version, s.groupInfo(st, c.mark.Group).Version)
		}
	}
	check("bob", want{"group:team", 4, 4, 0, 10, false}, want{"with:alice", 4, 4, 0, 8, false})
	for _, c := range []struct {
		mark store.ReadMark
		want error
	}{
		{store.ReadMark{User: "zed", Group: "team", Seq: 1}, store.ErrNotMember},
		{store.ReadMark{User: "alice", Group: "nope", Seq: 1}, store.ErrNoGroup},
		{store.ReadMark{User: "alice", Seq: 1}, store.ErrInvalid},
		{store.ReadMark{User: "alice", With: "bob", Group: "team", Seq: 1}, store.ErrInvalid},
		{store.ReadMark{User: "alice", With: "bob", Seq: -1}, store.ErrInvalid},
		{store.ReadMark{User: "al ice", With: "bob", Seq: 1}, store.ErrInvalid},
		{store.ReadMark{User: "alice", With: "b ob", Seq: 1}, store.ErrInvalid},
		{store.ReadMark{User: "alice", Group: "te am", Seq: 1}, store.ErrInvalid},
	} {
		if m, err := st.SetRead(s.ctx, c.mark); !errors.Is(err, c.want) {
			s.t.Fatalf("set read %+v: %+v, %v; want %v", c.mark, m, err, c.want)
		}
	}
	if _, err := st.Conversations(s.ctx, "al ice"); !errors.Is(err, store.ErrInvalid) {
		s.t.Fatalf("conversations of a malformed user: %v, want ErrInvalid", err)
	}
}

// testReceiptNamesPeerOffset: a direct read is told to the peer as the
// offset in the peer's own inbox of the newest message of their
// conversation at or below the read offset, with other traffic between.
func testReceiptNamesPeerOffset(s *suite) {
	st := s.open(store.Options{})
	s.append(st, direct("dave", "bob", "d1"))
	s.append(st, direct("dave", "bob", "d2"))
	m1 := s.append(st, direct("bob", "alice", "m1")) // alice 1, bob 3
	s.append(st, direct("carol", "alice", "x"))      // alice 2
	m2 := s.append(st, direct("bob", "alice", "m2")) // alice 3, bob 4
	s.append(st, direct("carol", "alice", "y"))      // alice 4
	if m1.Seq != 1 || m1.SenderSeq != 3 || m2.Seq != 3 || m2.SenderSeq != 4 {
		s.t.Fatalf("m1 %+v, m2 %+v: the test wants alice 1/bob 3 and alice 3/bob 4", m1, m2)
	}
	m := s.setRead(st, store.ReadMark{User: "alice", With: "bob", Seq: 2}) // carol's x
	if !m.Moved || m.Read != 2 || m.PeerSeq != 3 || m.Unread != 1 {
		s.t.Fatalf("alice reads to 2 (carol's): %+v; want the receipt of m1 (bob's 3), m2 unread", m)
	}
	m = s.setRead(st, store.ReadMark{User: "alice", With: "bob", Seq: 4}) // carol's y, after m2
	if !m.Moved || m.Read != 3 || m.PeerSeq != 4 || m.Unread != 0 {
		s.t.Fatalf("alice reads to 4: %+v; want read at m2 (3, the conversation's newest), receipt bob's 4", m)
	}
	m3 := s.append(st, direct("alice", "bob", "m3")) // alice 5, bob 5
	m = s.setRead(st, store.ReadMark{User: "bob", With: "alice", Seq: m3.Seq})
	if !m.Moved || m.PeerSeq != m3.SenderSeq || m.Unread != 0 {
		s.t.Fatalf("bob reads alice's m3: %+v; want the receipt of her copy (%d)", m, m3.SenderSeq)
	}
	// A read offset at another conversation's message moves the read
	// offset, not the receipt.
	s.append(st, direct("dave", "bob", "d3"))
	m4 := s.append(st, direct("alice", "bob", "m4"))
	m = s.setRead(st, store.ReadMark{User: "bob", With: "alice", Seq: m4.Seq - 1})
	if !m.Moved || m.Read != m4.Seq-1 || m.PeerSeq != m3.SenderSeq || m.Unread != 1 {
		s.t.Fatalf("bob reads to just before m4 (dave's d3): %+v; want read there, the receipt still m3's, m4 unread", m)
	}
	// Each side's list says how far the other has read its messages, in
	// its own inbox: what a client that was away shows as read ticks.
	peerRead := func(user, with string) int64 {
		s.t.Helper()
		list, err := st.Conversations(context.Background(), user)
		if err != nil {
			s.t.Fatalf("conversations of %s: %v", user, err)
		}
		for _, c := range list {
			if c.With == with {
				return c.PeerRead
			}
		}
		s.t.Fatalf("conversations of %s: %+v; no conversation with %s", user, list, with)
		return 0
	}
	if got := peerRead("alice", "bob"); got != m3.SenderSeq {
		s.t.Errorf("alice's conversation with bob: peer read %d; want %d, her copy of m3, which bob read", got, m3.SenderSeq)
	}
	if got := peerRead("bob", "alice"); got != m4.Seq {
		s.t.Errorf("bob's conversation with alice: peer read %d; want %d, his copy of m4: sending it, alice read all before it", got, m4.Seq)
	}
	if got := peerRead("dave", "bob"); got != 0 {
		s.t.Errorf("dave's conversation with bob: peer read %d; want 0, bob read none of dave's", got)
	}
}

// testUnreadUnderConcurrentTraffic: peers on several nodes write to alice
// while she answers each: every conversation's count is what a walk of
// its inbox gives, on both sides, and each receipt maps to the peer's
// own copy.
func testUnreadUnderConcurrentTraffic(s *suite) {
	nodes := s.nodes(3, store.Options{})
	peers := []string{"p0", "p1", "p2", "p3"}
	senderSeq := struct {
		sync.Mutex
		m map[string]int64 // mid -> offset in the sender's inbox
	}{m: map[string]int64{}}
	var wg sync.WaitGroup
	send := func(st store.Store, from, to string, n int) {
		defer wg.Done()
		for range n {
			a := direct(from, to, "x")
			res, err := st.Append(s.ctx, a)
			if err != nil {
				s.t.Errorf("%s to %s: %v", from, to, err)
				return
			}
			senderSeq.Lock()
			senderSeq.m[a.Mid] = res.SenderSeq
			senderSeq.Unlock()
		}
	}
	for i, p := range peers {
		wg.Add(2)
		go send(nodes[i%len(nodes)], p, "alice", 15)
		go send(nodes[(i+1)%len(nodes)], "alice", p, 5)
	}
	wg.Wait()
	if s.t.Failed() {
		return
	}
	// expect walks user's inbox: per peer, its newest offset and the
	// peer's messages since user's own last one.
	expect := func(user string) map[string][2]int64 {
		msgs, _ := s.readAll(nodes[0], store.Inbox(user), 50)
		out := map[string][2]int64{}
		for _, m := range msgs {
			peer, unread := m.From, out[m.From][1]+1
			if m.From == user {
				peer, unread = m.To, 0
			}
			out[peer] = [2]int64{m.Seq, unread}
		}
		return out
	}
	for _, user := range append([]string{"alice"}, peers...) {
		want := expect(user)
		_, got := s.conversations(nodes[len(nodes)-1], user)
		if len(got) != len(want) {
			s.t.Fatalf("%s has %d conversations, want %d", user, len(got), len(want))
		}
		for peer, w := range want {
			if c := got["with:"+peer]; c.Last != w[0] || c.Unread != w[1] {
				s.t.Fatalf("%s's conversation with %s: last %d unread %d; its inbox says last %d unread %d", user, peer, c.Last, c.Unread, w[0], w[1])
			}
		}
	}
	msgs, _ := s.readAll(nodes[0], store.Inbox("alice"), 50)
	for _, p := range peers {
		var newest store.Message
		for _, m := range msgs {
			if m.From == p {
				newest = m
			}
		}
		// Unless her own later answer read it already, the receipt names
		// the peer's copy of that message.
		m := s.setRead(nodes[1%len(nodes)], store.ReadMark{User: "alice", With: p, Seq: newest.Seq})
		copyAt := senderSeq.m[newest.Mid]
		if (m.Moved && m.PeerSeq != copyAt) || m.PeerSeq < copyAt {
			s.t.Fatalf("alice reads %s's newest (her %d, its copy at %d): %+v", p, newest.Seq, copyAt, m)
		}
	}
}

// testRetentionKeepsUnreadRight: what retention removes is no longer
// unread, by count and by age, in direct conversations and groups.
func testRetentionKeepsUnreadRight(s *suite) {
	st := s.open(store.Options{MaxPerStream: 3, MaxAge: time.Hour})
	old := s.clock.Millis() - 2*time.Hour.Milliseconds()
	now := s.clock.Millis()
	s.change("create", st.CreateGroup, changeOf("team", "alice", "", "bob")) // team 1, alice's own
	for i := range 2 {
		s.append(st, at(direct("carol", "alice", "old"), old+int64(i))) // alice 1, 2
	}
	for i := range 5 {
		s.append(st, at(direct("bob", "alice", "by count"), now+int64(i))) // alice 3..7
		s.append(st, at(toGroup("bob", "team", "by count"), now+int64(i))) // team 2..6
	}
	s.append(st, at(direct("carol", "alice", "new"), now)) // alice 8
	_, before := s.conversations(st, "alice")
	if before["with:bob"].Unread != 5 || before["group:team"].Unread != 5 || before["with:carol"].Unread != 3 {
		s.t.Fatalf("before retention: %+v; want 5, 5 and 3 unread", before)
	}
	if _, err := st.Trim(s.ctx); err != nil {
		s.t.Fatal(err)
	}
	_, after := s.conversations(st, "alice")
	// alice's inbox keeps its newest 3 (bob's last two, carol's new):
	// carol's old ones went by age and count, bob's first three by count;
	// the group keeps bob's last three.
	for name, want := range map[string]int64{"with:bob": 2, "with:carol": 1, "group:team": 3} {
		if c := after[name]; c.Unread != want || c.Last != before[name].Last {
			s.t.Fatalf("%s after retention: %+v; want %d unread (what is left of the unread), last unchanged", name, c, want)
		}
	}
	if _, err := st.MembersAt(s.ctx, "team", 0); !errors.Is(err, store.ErrTooOld) {
		s.t.Fatalf("members of team before retention's horizon: %v, want ErrTooOld", err)
	}
	m := s.setRead(st, store.ReadMark{User: "alice", With: "bob", Seq: after["with:bob"].Last - 1})
	if !m.Moved || m.Unread != 1 {
		s.t.Fatalf("alice reads all but bob's newest after retention: %+v, want 1 unread", m)
	}
}

// testConversationsBound: the newest MaxDirectConversations direct
// conversations are listed, and every group.
func testConversationsBound(s *suite) {
	nodes := s.nodes(2, store.Options{})
	n := store.MaxDirectConversations + 1
	var wg sync.WaitGroup
	const writers = 16
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += writers {
				if _, err := nodes[i%len(nodes)].Append(s.ctx, at(direct("u"+strconv.Itoa(i), "alice", "hi"), int64(1000+i))); err != nil {
					s.t.Errorf("append: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if s.t.Failed() {
		return
	}
	c := changeOf("team", "bob", "", "alice")
	c.TS = 1 // older than every direct message: listed all the same
	s.change("create", nodes[0].CreateGroup, c)
	list, by := s.conversations(nodes[0], "alice")
	if len(list) != store.MaxDirectConversations+1 {
		s.t.Fatalf("alice's list has %d conversations; want the newest %d direct ones and her group", len(list), store.MaxDirectConversations)
	}
	if _, ok := by["with:u0"]; ok {
		s.t.Fatalf("the oldest direct conversation (u0) is listed past the bound")
	}
	if list[0].With != "u"+strconv.Itoa(n-1) || list[len(list)-1].Group != "team" {
		s.t.Fatalf("alice's list runs from %+v to %+v; want the newest first, the old group last", list[0], list[len(list)-1])
	}
}

// testReadStatePersists: groups, read offsets, counts and last-seen times
// survive a close and reopen, and offsets go on from them.
func testReadStatePersists(s *suite) {
	st, err := store.Open(s.ctx, s.url, store.Options{Now: s.clock.Now, TrimInterval: -1})
	if err != nil {
		s.t.Fatal(err)
	}
	s.change("create", st.CreateGroup, changeOf("team", "alice", "", "bob"))
	s.append(st, toGroup("bob", "team", "hi"))
	s.append(st, direct("bob", "alice", "one"))
	s.append(st, direct("bob", "alice", "two"))
	s.setRead(st, store.ReadMark{User: "alice", With: "bob", Seq: 1})
	if err := st.SetLastSeen(s.ctx, "bob", 1234); err != nil {
		s.t.Fatal(err)
	}
	wantList, _ := s.conversations(st, "alice")
	wantGroup := s.groupInfo(st, "team")
	if err := st.Close(); err != nil {
		s.t.Fatal(err)
	}
	if _, err := st.Conversations(s.ctx, "alice"); !errors.Is(err, store.ErrClosed) {
		s.t.Fatalf("conversations after close: %v, want ErrClosed", err)
	}
	if _, err := st.CreateGroup(s.ctx, changeOf("late", "alice", "")); !errors.Is(err, store.ErrClosed) {
		s.t.Fatalf("create after close: %v, want ErrClosed", err)
	}
	again := s.open(store.Options{})
	gotList, _ := s.conversations(again, "alice")
	if fmt.Sprint(gotList) != fmt.Sprint(wantList) {
		s.t.Fatalf("alice's conversations after reopening: %+v; before: %+v", gotList, wantList)
	}
	if got := s.groupInfo(again, "team"); fmt.Sprint(got) != fmt.Sprint(wantGroup) {
		s.t.Fatalf("team after reopening: %+v; before: %+v", got, wantGroup)
	}
	if seen, err := again.LastSeen(s.ctx, "bob"); err != nil || seen["bob"] != 1234 {
		s.t.Fatalf("bob's last seen after reopening: %v (%v), want 1234", seen, err)
	}
	if ch := s.change("add carol", again.AddMember, changeOf("team", "alice", "carol")); ch.Seq != 3 {
		s.t.Fatalf("an event after reopening at %d, want 3", ch.Seq)
	}
	if res := s.append(again, toGroup("carol", "team", "hello")); res.Seq != 4 || res.Version != 3 {
		s.t.Fatalf("a group message after reopening: %+v, want 4 at version 3", res)
	}
	if m := s.setRead(again, store.ReadMark{User: "alice", With: "bob", Seq: 1}); m.Moved || m.Read != 1 || m.Unread != 1 {
		s.t.Fatalf("alice's read after reopening: %+v; want read 1 kept, one unread", m)
	}
}
