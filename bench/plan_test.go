package main

import (
	"slices"
	"strings"
	"testing"
)

func TestSplitGivesEveryUserAndRoomToExactlyOneProcess(t *testing.T) {
	for _, tc := range []struct{ users, rooms, cpu, procs int }{
		{300, 20, 1, 1}, {301, 7, 2, 3}, {50000, 100, 1, 4}, {10, 3, 3, 3},
	} {
		seenU := make([]int, tc.users)
		seenR := make([]int, tc.rooms)
		conn := 0
		for k := 0; k < tc.procs; k++ {
			s := split(tc.users, tc.rooms, 0, tc.cpu, k, tc.procs)
			if s.ConnsFrom != conn {
				t.Errorf("%+v: process %d starts at connection %d, want %d", tc, k, s.ConnsFrom, conn)
			}
			for u := s.Users[0]; u < s.Users[1]; u++ {
				seenU[u]++
				conn += tc.cpu
			}
			for r := s.Rooms[0]; r < s.Rooms[1]; r++ {
				seenR[r]++
			}
		}
		for u, n := range seenU {
			if n != 1 {
				t.Fatalf("%+v: user %d is in %d processes", tc, u, n)
			}
		}
		for r, n := range seenR {
			if n != 1 {
				t.Fatalf("%+v: room %d is in %d processes", tc, r, n)
			}
		}
	}
}

func TestRecipientsFollowTheSpec(t *testing.T) {
	// 4 users with 2 connections each: user u has connections 2u and 2u+1.
	p := newPlan(workerConfig{RunID: "r1", Seed: 1, Mix: 0.5, ConnsPerUser: 2, RoomSize: 3, GroupSize: 2}, split(4, 1, 1, 2, 0, 1))
	if got := p.roomConns[0]; !slices.Equal(got, []int32{0, 1, 2, 3, 4, 5}) {
		t.Fatalf("room 0 holds %v, want every connection of users 0-2", got)
	}
	// Direct from connection 1 (user 0) to user 2: both of user 2's
	// connections, and a copy to user 0's other connection, not to 1.
	got := p.recipients(pick{from: 1, to: 2}, nil)
	if want := []int32{4, 5, 0}; !slices.Equal(got, want) {
		t.Errorf("direct recipients %v, want %v", got, want)
	}
	// Room from connection 2: every joined connection but the sender.
	got = p.recipients(pick{room: true, from: 2, to: 0}, nil)
	if want := []int32{0, 1, 3, 4, 5}; !slices.Equal(got, want) {
		t.Errorf("room recipients %v, want %v", got, want)
	}
	// Group 0 is users 0 and 1, from connection 3 (user 1): every
	// connection of every member but the sending one.
	if got := p.groupUsers[0]; !slices.Equal(got, []int32{0, 1}) {
		t.Fatalf("group 0 holds users %v, want 0 and 1", got)
	}
	got = p.recipients(pick{group: true, from: 3, to: 0}, nil)
	if want := []int32{0, 1, 2}; !slices.Equal(got, want) {
		t.Errorf("group recipients %v, want %v", got, want)
	}
}

func TestPickHonoursTheMix(t *testing.T) {
	p := newPlan(workerConfig{RunID: "r1", Seed: 7, Mix: 0.7, GroupMix: 0.2, ConnsPerUser: 2, RoomSize: 10, GroupSize: 5},
		split(50, 5, 4, 2, 0, 1))
	direct, group := 0, 0
	const n = 20000
	for seq := int64(0); seq < n; seq++ {
		pk := p.pick(3, seq)
		if pk != p.pick(3, seq) {
			t.Fatal("pick is not a function of (phase, seq)")
		}
		if pk.group {
			if !slices.Contains(p.groupConns[pk.to], pk.from) {
				t.Fatalf("message %d goes to group %d from connection %d, not a member's", seq, pk.to, pk.from)
			}
			group++
			continue
		}
		if pk.room {
			if !slices.Contains(p.roomConns[pk.to], pk.from) {
				t.Fatalf("message %d goes to room %d from connection %d, which did not join it", seq, pk.to, pk.from)
			}
			continue
		}
		direct++
		if p.connUser[pk.from] == pk.to {
			t.Fatalf("message %d: user %d writes to itself", seq, pk.to)
		}
	}
	if f := float64(direct) / n; f < 0.68 || f > 0.72 {
		t.Errorf("%.3f of messages are direct, want about 0.7", f)
	}
	if f := float64(group) / n; f < 0.18 || f > 0.22 {
		t.Errorf("%.3f of messages go to groups, want about 0.2", f)
	}
}

func TestBodyCarriesPhaseSequenceAndSendTime(t *testing.T) {
	b := appendBody(nil, 7, 123456, 9876543210, 64)
	if len(b) != 64 {
		t.Errorf("body is %d bytes, want the 64 asked for", len(b))
	}
	phase, seq, ns, ok := parseBody(string(b))
	if !ok || phase != 7 || seq != 123456 || ns != 9876543210 {
		t.Errorf("parseBody(%q) = %d, %d, %d, %v", b, phase, seq, ns, ok)
	}
	if short := appendBody(nil, 1, 2, 3, 1); string(short) != "1.2.3." {
		t.Errorf("a body smaller than its header is %q, want the header alone", short)
	}
	for _, s := range []string{"", "hi", "1.2", "1.2.3", "a.2.3.", "1..3.", strings.Repeat("9", 25) + ".1.1."} {
		if _, _, _, ok := parseBody(s); ok {
			t.Errorf("parseBody(%q) accepted a body bench did not write", s)
		}
	}
}
