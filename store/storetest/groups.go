package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/shardchat/shard/store"
)

// The group rules of issue 12, as store.Groups documents them.

// changeOf is a membership change stamped as a node stamps it.
func changeOf(group, by, user string, members ...string) store.GroupChange {
	return store.GroupChange{Group: group, By: by, User: user, Members: members,
		Mid: "e" + strconv.FormatInt(mids.Add(1), 36), TS: time.Now().UnixMilli()}
}

func toGroup(from, group, body string) store.Append {
	return store.Append{Mid: "m" + strconv.FormatInt(mids.Add(1), 36), From: from, Group: group, Body: body, TS: time.Now().UnixMilli()}
}

// changeFunc is one of the four changes of store.Groups.
type changeFunc func(context.Context, store.GroupChange) (store.Changed, error)

func (s *suite) change(what string, f changeFunc, c store.GroupChange) store.Changed {
	s.t.Helper()
	ch, err := f(s.ctx, c)
	if err != nil {
		s.t.Fatalf("%s %+v: %v", what, c, err)
	}
	return ch
}

func (s *suite) refused(what string, f changeFunc, c store.GroupChange, want error) {
	s.t.Helper()
	if ch, err := f(s.ctx, c); !errors.Is(err, want) {
		s.t.Fatalf("%s %+v: %+v, %v; want %v", what, c, ch, err, want)
	}
}

func (s *suite) groupInfo(st store.Store, group string) store.GroupInfo {
	s.t.Helper()
	info, err := st.Group(s.ctx, group)
	if err != nil {
		s.t.Fatalf("group %s: %v", group, err)
	}
	return info
}

// memberNames lists info's members as "user" or "user*" for an admin.
func memberNames(info store.GroupInfo) []string {
	var names []string
	for _, m := range info.Members {
		n := m.User
		if m.Admin {
			n += "*"
		}
		names = append(names, n)
	}
	return names
}

// membersAt checks group's members at each version.
func (s *suite) membersAt(st store.Store, group string, want map[int64][]string) {
	s.t.Helper()
	for v, w := range want {
		got, err := st.MembersAt(s.ctx, group, v)
		if err != nil || !slices.Equal(got, w) {
			s.t.Fatalf("members of %s at version %d: %v (%v); want %v", group, v, got, err, w)
		}
	}
}

func (s *suite) readGroupAll(st store.Store, user, group string) []store.Message {
	s.t.Helper()
	var all []store.Message
	after := int64(0)
	for {
		page, _, more, err := st.ReadGroup(s.ctx, user, group, after, 7)
		if err != nil {
			s.t.Fatalf("%s reads group %s after %d: %v", user, group, after, err)
		}
		all = append(all, page...)
		if len(page) > 0 {
			after = page[len(page)-1].Seq
		}
		if !more {
			return all
		}
	}
}

// testGroupLifecycle: create, add, remove, with the events each appends,
// the answers for those who may not make them, and the group as it
// stands after each.
func testGroupLifecycle(s *suite) {
	st := s.open(store.Options{})
	c := changeOf("team", "alice", "", "bob", "carol", "bob", "alice")
	created := s.change("create", st.CreateGroup, c)
	if created.Seq != 1 || created.Version != 1 {
		s.t.Fatalf("create: %+v, want the created event at 1, version 1", created)
	}
	info := s.groupInfo(st, "team")
	if got := memberNames(info); !slices.Equal(got, []string{"alice*", "bob", "carol"}) || info.Version != 1 || info.Last != 1 {
		s.t.Fatalf("team after create: %v version %d last %d; want alice (admin), bob, carol at 1", got, info.Version, info.Last)
	}
	for _, m := range info.Members {
		if m.Seq != 1 || m.Since != c.TS {
			s.t.Fatalf("member %+v: want since the created event (offset 1, ts %d)", m, c.TS)
		}
	}
	s.refused("create again", st.CreateGroup, changeOf("team", "dave", ""), store.ErrConflict)

	added := s.change("add dave", st.AddMember, changeOf("team", "alice", "dave"))
	if added.Seq != 2 || added.Version != 2 {
		s.t.Fatalf("add dave: %+v, want event 2, version 2", added)
	}
	if again := s.change("add dave again", st.AddMember, changeOf("team", "alice", "dave")); again.Seq != 0 || again.Version != 2 {
		s.t.Fatalf("adding a member twice: %+v, want nothing changed (seq 0, version 2)", again)
	}
	s.refused("add by a member who is no admin", st.AddMember, changeOf("team", "bob", "erin"), store.ErrForbidden)
	s.refused("remove by a member who is no admin", st.RemoveMember, changeOf("team", "bob", "carol"), store.ErrForbidden)
	s.refused("add by a non-member", st.AddMember, changeOf("team", "zed", "erin"), store.ErrNotMember)
	s.refused("remove a non-member", st.RemoveMember, changeOf("team", "alice", "erin"), store.ErrNotMember)
	s.refused("leave by a non-member", st.LeaveGroup, changeOf("team", "erin", ""), store.ErrNotMember)
	for what, f := range map[string]changeFunc{"add": st.AddMember, "remove": st.RemoveMember, "leave": st.LeaveGroup} {
		s.refused(what+" in an unknown group", f, changeOf("nope", "alice", "bob"), store.ErrNoGroup)
	}
	if _, err := st.Group(s.ctx, "nope"); !errors.Is(err, store.ErrNoGroup) {
		s.t.Fatalf("unknown group: %v, want ErrNoGroup", err)
	}

	removed := s.change("remove carol", st.RemoveMember, changeOf("team", "alice", "carol"))
	left := s.change("bob leaves", st.LeaveGroup, changeOf("team", "bob", ""))
	if removed.Seq != 3 || left.Seq != 4 || left.Admin != "" || left.Gone {
		s.t.Fatalf("remove carol %+v, bob leaves %+v: want events 3 and 4, no hand-over", removed, left)
	}
	info = s.groupInfo(st, "team")
	if got := memberNames(info); !slices.Equal(got, []string{"alice*", "dave"}) || info.Version != 4 || info.Last != 4 {
		s.t.Fatalf("team: %v version %d last %d; want alice (admin) and dave, version 4", got, info.Version, info.Last)
	}
	msgs, last := s.readAll(st, store.GroupStream("team"), 10)
	want := []struct{ event, from, user string }{
		{store.EventCreated, "alice", ""}, {store.EventAdded, "alice", "dave"},
		{store.EventRemoved, "alice", "carol"}, {store.EventLeft, "bob", "bob"},
	}
	if last != 4 || len(msgs) != len(want) {
		s.t.Fatalf("team's stream: %d entries, last %d; want the 4 events", len(msgs), last)
	}
	for i, w := range want {
		m := msgs[i]
		if m.Event != w.event || m.From != w.from || m.User != w.user || m.Group != "team" || m.Seq != int64(i+1) || m.Body != "" || m.Mid == "" {
			s.t.Fatalf("event %d: %+v, want %s by %s naming %q", i+1, m, w.event, w.from, w.user)
		}
	}
	s.membersAt(st, "team", map[int64][]string{
		1: {"alice", "bob", "carol"}, 2: {"alice", "bob", "carol", "dave"}, 3: {"alice", "bob", "dave"}, 4: {"alice", "dave"}, 9: {"alice", "dave"},
	})
	for user, want := range map[string][]string{"alice": {"team"}, "dave": {"team"}, "bob": nil, "carol": nil} {
		got, err := st.UserGroups(s.ctx, user)
		if err != nil || !slices.Equal(got, want) {
			s.t.Fatalf("%s's groups: %v (%v), want %v", user, got, err, want)
		}
	}
	// Groups, rooms and inboxes are separate name spaces.
	if res := s.append(st, room("alice", "team", "room named team")); res.Seq != 1 {
		s.t.Fatalf("room team: seq %d, want 1 (not the group's stream)", res.Seq)
	}
}

// testGroupSend: a member's message goes to the group's stream with the
// group's version; anyone else's is refused and stores nothing; keys
// work as for other messages.
func testGroupSend(s *suite) {
	nodes := s.nodes(2, store.Options{})
	n1, n2 := nodes[0], nodes[len(nodes)-1]
	s.change("create", n1.CreateGroup, changeOf("team", "alice", "", "bob"))
	res := s.append(n2, toGroup("bob", "team", "hi team"))
	if res.Seq != 2 || res.Version != 1 || res.SenderSeq != 0 {
		s.t.Fatalf("bob's group message: %+v, want offset 2 at version 1", res)
	}
	for _, a := range []struct {
		name string
		a    store.Append
		want error
	}{
		{"a non-member", toGroup("carol", "team", "let me in"), store.ErrNotMember},
		{"an unknown group", toGroup("alice", "nope", "anyone?"), store.ErrNoGroup},
	} {
		if got, err := n1.Append(s.ctx, a.a); !errors.Is(err, a.want) {
			s.t.Fatalf("send from %s: %+v, %v; want %v", a.name, got, err, a.want)
		}
	}
	keyed := toGroup("carol", "team", "keyed")
	keyed.Key = "k1"
	if _, err := n1.Append(s.ctx, keyed); !errors.Is(err, store.ErrNotMember) {
		s.t.Fatalf("keyed send from a non-member: %v, want ErrNotMember", err)
	}
	if _, last := s.readAll(n1, store.GroupStream("team"), 10); last != 2 {
		s.t.Fatalf("team's last offset %d after refused sends, want 2: a refused message stores nothing", last)
	}
	s.change("add carol", n2.AddMember, changeOf("team", "alice", "carol"))
	first := s.append(n1, keyed)
	if first.Duplicate || first.Seq != 4 || first.Version != 3 {
		s.t.Fatalf("carol's keyed send once a member: %+v, want new at 4, version 3 (a refused send does not use up its key)", first)
	}
	again := keyed
	again.Mid = "resent"
	dup := s.append(n2, again)
	if !dup.Duplicate || dup.Seq != first.Seq || dup.Version != first.Version || dup.Mid != keyed.Mid {
		s.t.Fatalf("resend of carol's keyed group message: %+v, want a duplicate of %+v", dup, first)
	}
	msgs, _ := s.readAll(n1, store.GroupStream("team"), 10)
	if len(msgs) != 4 || msgs[1].Body != "hi team" || msgs[1].From != "bob" || msgs[1].Group != "team" || msgs[1].Event != "" || msgs[3].Mid != keyed.Mid {
		s.t.Fatalf("team's stream: %+v; want created, bob's message, added carol, carol's message once", msgs)
	}
}

// testMemberReadsFromItsJoin: a member reads the stream from the event
// that added it, a removed one reads nothing, one added again reads from
// its new event; the API's Read sees it all.
func testMemberReadsFromItsJoin(s *suite) {
	st := s.open(store.Options{})
	s.change("create", st.CreateGroup, changeOf("team", "alice", "", "bob"))
	s.append(st, toGroup("alice", "team", "before dave"))
	s.change("add dave", st.AddMember, changeOf("team", "alice", "dave")) // 3
	s.append(st, toGroup("bob", "team", "welcome dave"))                  // 4
	got := s.readGroupAll(st, "dave", "team")
	if len(got) != 2 || got[0].Seq != 3 || got[0].Event != store.EventAdded || got[1].Body != "welcome dave" {
		s.t.Fatalf("dave reads %+v; want from the event that added him (3) on", got)
	}
	if page, last, _, err := st.ReadGroup(s.ctx, "dave", "team", 1, 10); err != nil || len(page) != 2 || page[0].Seq != 3 || last != 4 {
		s.t.Fatalf("dave reads after 1: %d messages from %d, last %d, %v; want 3 and 4", len(page), first(page), last, err)
	}
	if all := s.readGroupAll(st, "bob", "team"); len(all) != 4 {
		s.t.Fatalf("bob, a member from the start, reads %d entries, want 4", len(all))
	}
	s.change("remove dave", st.RemoveMember, changeOf("team", "alice", "dave")) // 5
	s.append(st, toGroup("bob", "team", "dave is gone"))                        // 6
	for _, who := range []string{"dave", "zed"} {
		if msgs, _, _, err := st.ReadGroup(s.ctx, who, "team", 0, 10); !errors.Is(err, store.ErrNotMember) || len(msgs) != 0 {
			s.t.Fatalf("%s, not a member, reads %d messages, %v; want ErrNotMember", who, len(msgs), err)
		}
	}
	if _, _, _, err := st.ReadGroup(s.ctx, "dave", "nope", 0, 10); !errors.Is(err, store.ErrNoGroup) {
		s.t.Fatalf("read of an unknown group: %v, want ErrNoGroup", err)
	}
	s.change("add dave again", st.AddMember, changeOf("team", "alice", "dave")) // 7
	if got := s.readGroupAll(st, "dave", "team"); len(got) != 1 || got[0].Seq != 7 {
		s.t.Fatalf("dave added again reads %+v; want from his new event (7) only", got)
	}
	if all, last := s.readAll(st, store.GroupStream("team"), 10); len(all) != 7 || last != 7 {
		s.t.Fatalf("the API's read of the stream: %d entries, last %d; want all 7", len(all), last)
	}
}

// testAdminHandOver: the last admin leaving makes the longest-standing
// member admin, named on the left event.
func testAdminHandOver(s *suite) {
	st := s.open(store.Options{})
	s.change("create", st.CreateGroup, changeOf("team", "alice", "", "carol", "bob"))
	s.change("add aaron", st.AddMember, changeOf("team", "alice", "aaron")) // later than bob and carol
	left := s.change("alice leaves", st.LeaveGroup, changeOf("team", "alice", ""))
	if left.Seq != 3 || left.Admin != "bob" || left.Gone {
		s.t.Fatalf("the admin leaves: %+v; want bob, first by id of the longest-standing (bob, carol), made admin", left)
	}
	msgs, _ := s.readAll(st, store.GroupStream("team"), 10)
	if ev := msgs[2]; ev.Event != store.EventLeft || ev.User != "alice" || ev.Admin != "bob" {
		s.t.Fatalf("the left event: %+v; want alice left, bob admin", ev)
	}
	if got := memberNames(s.groupInfo(st, "team")); !slices.Equal(got, []string{"aaron", "bob*", "carol"}) {
		s.t.Fatalf("team after the hand-over: %v, want bob admin", got)
	}
	s.change("bob, now admin, adds dave", st.AddMember, changeOf("team", "bob", "dave"))
	s.refused("carol, no admin, removes dave", st.RemoveMember, changeOf("team", "carol", "dave"), store.ErrForbidden)
	if left := s.change("carol leaves", st.LeaveGroup, changeOf("team", "carol", "")); left.Admin != "" {
		s.t.Fatalf("a member who is no admin leaves: %+v, want no hand-over", left)
	}
	s.refused("removing oneself", st.RemoveMember, changeOf("team", "bob", "bob"), store.ErrInvalid)
}

// testLastMemberLeaves: the group is gone with its last member; its name
// may be taken again, whose stream goes on from the old offsets and whose
// members never see the old messages.
func testLastMemberLeaves(s *suite) {
	st := s.open(store.Options{})
	s.change("create", st.CreateGroup, changeOf("team", "alice", "", "bob"))
	s.append(st, toGroup("bob", "team", "old secret"))
	s.change("bob leaves", st.LeaveGroup, changeOf("team", "bob", ""))
	gone := s.change("alice leaves", st.LeaveGroup, changeOf("team", "alice", ""))
	if !gone.Gone || gone.Seq != 4 || gone.Admin != "" {
		s.t.Fatalf("the last member leaves: %+v, want the group gone after event 4", gone)
	}
	if _, err := st.Group(s.ctx, "team"); !errors.Is(err, store.ErrNoGroup) {
		s.t.Fatalf("a gone group: %v, want ErrNoGroup", err)
	}
	s.membersAt(st, "team", map[int64][]string{1: {"alice", "bob"}, 3: {"alice"}, 4: nil})
	if _, err := st.Append(s.ctx, toGroup("alice", "team", "anyone?")); !errors.Is(err, store.ErrNoGroup) {
		s.t.Fatalf("send to a gone group: %v, want ErrNoGroup", err)
	}
	if groups, _ := st.UserGroups(s.ctx, "alice"); len(groups) != 0 {
		s.t.Fatalf("alice's groups after the last left: %v", groups)
	}
	again := s.change("create again", st.CreateGroup, changeOf("team", "carol", "", "bob"))
	if again.Seq != 5 {
		s.t.Fatalf("a new group of a gone one's name: created at %d, want 5 (its stream goes on, offsets never repeat)", again.Seq)
	}
	for _, who := range []string{"carol", "bob"} {
		if got := s.readGroupAll(st, who, "team"); len(got) != 1 || got[0].Seq != 5 || got[0].Event != store.EventCreated {
			s.t.Fatalf("%s in the new group reads %+v; want only its created event, none of the old group's messages", who, got)
		}
	}
	if info := s.groupInfo(st, "team"); !slices.Equal(memberNames(info), []string{"bob", "carol*"}) || info.Version != 5 {
		s.t.Fatalf("the new team: %+v", info)
	}
	s.membersAt(st, "team", map[int64][]string{1: {"alice", "bob"}, 4: nil, 5: {"bob", "carol"}})
}

// testGroupBounds: members per group, members per create, groups per
// user; past each, nothing changes.
func testGroupBounds(s *suite) {
	nodes := s.nodes(3, store.Options{MaxGroupMembers: 3})
	st := nodes[0]
	s.refused("create with 4 members", st.CreateGroup, changeOf("big", "alice", "", "bob", "carol", "dave"), store.ErrTooMany)
	if _, err := st.Group(s.ctx, "big"); !errors.Is(err, store.ErrNoGroup) {
		s.t.Fatalf("a refused create made the group: %v", err)
	}
	s.change("create with 3", st.CreateGroup, changeOf("small", "alice", "", "bob", "carol"))
	s.refused("a 4th member", st.AddMember, changeOf("small", "alice", "dave"), store.ErrTooMany)
	s.change("carol leaves", st.LeaveGroup, changeOf("small", "carol", ""))
	s.change("then dave fits", st.AddMember, changeOf("small", "alice", "dave"))

	many := make([]string, store.MaxCreateMembers+1)
	for i := range many {
		many[i] = "u" + strconv.Itoa(i)
	}
	s.refused("create naming too many", st.CreateGroup, changeOf("huge", "alice", "", many...), store.ErrTooMany)

	// Groups per user: zoe joins MaxUserGroups groups, made in parallel.
	var wg sync.WaitGroup
	const makers = 8
	for w := range makers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < store.MaxUserGroups; i += makers {
				name := "g" + strconv.Itoa(i)
				if _, err := nodes[i%len(nodes)].CreateGroup(s.ctx, changeOf(name, "maker"+strconv.Itoa(w), "", "zoe")); err != nil {
					s.t.Errorf("create %s: %v", name, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if s.t.Failed() {
		return
	}
	s.refused("create with zoe in her 1001st group", st.CreateGroup, changeOf("one-more", "yan", "", "zoe"), store.ErrTooMany)
	s.refused("zoe creates a 1001st group", st.CreateGroup, changeOf("one-more", "zoe", ""), store.ErrTooMany)
	s.change("create without zoe", st.CreateGroup, changeOf("one-more", "yan", ""))
	s.refused("add zoe to a 1001st group", st.AddMember, changeOf("one-more", "yan", "zoe"), store.ErrTooMany)
	if groups, err := st.UserGroups(s.ctx, "zoe"); err != nil || len(groups) != store.MaxUserGroups {
		s.t.Fatalf("zoe's groups: %d (%v), want %d", len(groups), err, store.MaxUserGroups)
	}
	s.change("zoe leaves one", st.LeaveGroup, changeOf("g7", "zoe", ""))
	s.change("then zoe fits", st.AddMember, changeOf("one-more", "yan", "zoe"))
}

// testGroupMalformed: malformed names and arguments are ErrInvalid and
// change nothing.
func testGroupMalformed(s *suite) {
	st := s.open(store.Options{})
	s.change("create", st.CreateGroup, changeOf("team", "alice", "", "bob"))
	bad := "bad name"
	for _, c := range []struct {
		what string
		f    changeFunc
		c    store.GroupChange
	}{
		{"create, malformed group", st.CreateGroup, changeOf(bad, "alice", "")},
		{"create, empty group", st.CreateGroup, changeOf("", "alice", "")},
		{"create, malformed member", st.CreateGroup, changeOf("other", "alice", "", "bob", bad)},
		{"create, malformed creator", st.CreateGroup, changeOf("other", bad, "")},
		{"create, no mid", st.CreateGroup, store.GroupChange{Group: "other", By: "alice"}},
		{"add, malformed user", st.AddMember, changeOf("team", "alice", bad)},
		{"add, no user", st.AddMember, changeOf("team", "alice", "")},
		{"add, malformed group", st.AddMember, changeOf(bad, "alice", "carol")},
		{"remove, malformed user", st.RemoveMember, changeOf("team", "alice", string(make([]byte, 65)))},
		{"leave, malformed by", st.LeaveGroup, changeOf("team", bad, "")},
	} {
		s.refused(c.what, c.f, c.c, store.ErrInvalid)
	}
	for _, a := range []store.Append{
		toGroup("alice", bad, "x"),
		{Mid: "m", From: "alice", To: "bob", Group: "team", Body: "two targets"},
		{Mid: "m", From: "alice", Room: "lobby", Group: "team", Body: "two targets"},
		toGroup("alice", "team", ""),
	} {
		if _, err := st.Append(s.ctx, a); !errors.Is(err, store.ErrInvalid) {
			s.t.Fatalf("append %+v: %v, want ErrInvalid", a, err)
		}
	}
	for _, f := range []func() error{
		func() error { _, err := st.Group(s.ctx, bad); return err },
		func() error { _, err := st.UserGroups(s.ctx, bad); return err },
		func() error { _, _, _, err := st.ReadGroup(s.ctx, "alice", bad, 0, 10); return err },
		func() error { _, _, _, err := st.ReadGroup(s.ctx, bad, "team", 0, 10); return err },
		func() error { _, _, _, err := st.Read(s.ctx, store.GroupStream(bad), 0, 10); return err },
	} {
		if err := f(); !errors.Is(err, store.ErrInvalid) {
			s.t.Fatalf("a read with a malformed name: %v, want ErrInvalid", err)
		}
	}
	if info := s.groupInfo(st, "team"); info.Last != 1 || len(info.Members) != 2 {
		s.t.Fatalf("team after malformed requests: %+v, want it unchanged", info)
	}
}

// testSendRacingRemoval: members send on several nodes while dave, one
// of them, is removed. Every message before the removal's offset carries
// the version before it (dave among its recipients), every one after
// carries the removal's; none of dave's is after it.
func testSendRacingRemoval(s *suite) {
	nodes := s.nodes(3, store.Options{})
	senders := []string{"alice", "bob", "carol", "dave"}
	s.change("create", nodes[0].CreateGroup, changeOf("team", "alice", "", senders[1:]...))
	type sent struct {
		from string
		res  store.Appended
	}
	var (
		mu       sync.Mutex
		all      []sent
		refused  = map[string]int{}
		wg       sync.WaitGroup
		start    = make(chan struct{})
		halfway  = make(chan struct{}) // the removal goes while the sends do
		signaled sync.Once
	)
	// Each sender sends per messages, and goes on until one of its sends
	// began after the removal was answered (at most 10 × per): on a fast
	// disk without -race, 800 appends once all went in before the removal
	// did, however many were sent.
	const per = 25
	removed := make(chan struct{}) // closed once the removal is answered
	for i, from := range senders {
		for j := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st := nodes[(i+j)%len(nodes)]
				<-start
				after := false
				for k := 0; k < 10*per && (k < per || !after); k++ {
					select {
					case <-removed:
						after = true
					default:
					}
					res, err := st.Append(s.ctx, toGroup(from, "team", "racing"))
					mu.Lock()
					switch {
					case err == nil:
						all = append(all, sent{from, res})
					case errors.Is(err, store.ErrNotMember) && from == "dave":
						refused[from]++
					default:
						s.t.Errorf("%s sends: %v", from, err)
					}
					if len(all) == len(senders)*2*per/5 {
						signaled.Do(func() { close(halfway) })
					}
					mu.Unlock()
				}
			}()
		}
	}
	close(start)
	<-halfway
	removal := s.change("remove dave", nodes[len(nodes)-1].RemoveMember, changeOf("team", "alice", "dave"))
	close(removed)
	wg.Wait()
	if s.t.Failed() {
		return
	}
	sides := map[bool]int{}
	for _, m := range all {
		before := m.res.Seq < removal.Seq
		sides[before]++
		switch {
		case m.res.Seq == removal.Seq:
			s.t.Fatalf("%s's message took the removal's offset %d", m.from, removal.Seq)
		case before && m.res.Version != 1, !before && m.res.Version != removal.Seq:
			s.t.Fatalf("%s's message at %d has version %d; the removal is at %d: want version %d",
				m.from, m.res.Seq, m.res.Version, removal.Seq, map[bool]int64{true: 1, false: removal.Seq}[before])
		case !before && m.from == "dave":
			s.t.Fatalf("dave's message stored at %d, after his removal at %d", m.res.Seq, removal.Seq)
		}
	}
	// The router's view: the recipients of each message by its version.
	s.membersAt(nodes[1%len(nodes)], "team", map[int64][]string{1: senders, removal.Seq: senders[:3]})
	if sides[true] == 0 || sides[false] == 0 {
		s.t.Fatalf("%d messages before the removal, %d after: the sends did not race it", sides[true], sides[false])
	}
	if _, err := nodes[0].Append(s.ctx, toGroup("dave", "team", "late")); !errors.Is(err, store.ErrNotMember) {
		s.t.Fatalf("dave sends after his removal was acked: %v, want ErrNotMember", err)
	}
	msgs, last := s.readAll(nodes[0], store.GroupStream("team"), 50)
	if int(last) != len(all)+2 || len(msgs) != len(all)+2 {
		s.t.Fatalf("team's stream: %d entries, last %d; want %d messages and 2 events", len(msgs), last, len(all))
	}
	s.t.Logf("removal at %d of %d; dave refused %d times", removal.Seq, last, refused["dave"])
}

// testGroupOffsetsDense: members on several nodes send to one group at
// once, while members are added: offsets 1..N, each once, in the stream.
func testGroupOffsetsDense(s *suite) {
	nodes := s.nodes(3, store.Options{})
	members := []string{"m0", "m1", "m2", "m3", "m4", "m5"}
	s.change("create", nodes[0].CreateGroup, changeOf("busy", "m0", "", members[1:]...))
	var (
		mu   sync.Mutex
		seqs = map[int64]string{1: "created"}
		wg   sync.WaitGroup
	)
	record := func(seq int64, what string) {
		mu.Lock()
		defer mu.Unlock()
		if prev, dup := seqs[seq]; dup {
			s.t.Errorf("offset %d given to %s and %s", seq, prev, what)
		}
		seqs[seq] = what
	}
	for i, from := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range 30 {
				a := toGroup(from, "busy", "x")
				res, err := nodes[(i+k)%len(nodes)].Append(s.ctx, a)
				if err != nil {
					s.t.Errorf("%s sends: %v", from, err)
					return
				}
				record(res.Seq, a.Mid)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := range 5 {
			ch, err := nodes[k%len(nodes)].AddMember(s.ctx, changeOf("busy", "m0", "late"+strconv.Itoa(k)))
			if err != nil {
				s.t.Errorf("add: %v", err)
				return
			}
			record(ch.Seq, fmt.Sprintf("added late%d", k))
		}
	}()
	wg.Wait()
	if s.t.Failed() {
		return
	}
	msgs, last := s.readAll(nodes[len(nodes)-1], store.GroupStream("busy"), 50)
	if int(last) != len(seqs) || len(msgs) != len(seqs) {
		s.t.Fatalf("busy: %d entries, last %d; want %d", len(msgs), last, len(seqs))
	}
	for i, m := range msgs {
		if m.Seq != int64(i+1) {
			s.t.Fatalf("busy: position %d holds offset %d: a gap", i, m.Seq)
		}
		if what := seqs[m.Seq]; what != m.Mid && what != "created" && what != "added "+m.User {
			s.t.Fatalf("busy at %d holds %+v, but %s was given that offset", m.Seq, m, what)
		}
	}
}
