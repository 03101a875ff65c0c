package storetest

import (
	"errors"
	"maps"
	"strconv"

	"github.com/shardchat/shard/store"
)

// testLastSeen: a last-seen time only moves forward, is read back from
// any node, and only for users who have one.
func testLastSeen(s *suite) {
	nodes := s.nodes(2, store.Options{})
	n1, n2 := nodes[0], nodes[len(nodes)-1]
	for _, set := range []struct {
		user string
		ms   int64
	}{{"bob", 100}, {"bob", 50}, {"carol", 7}, {"bob", 120}, {"carol", 6}} {
		if err := n1.SetLastSeen(s.ctx, set.user, set.ms); err != nil {
			s.t.Fatalf("set last seen %+v: %v", set, err)
		}
	}
	got, err := n2.LastSeen(s.ctx, "bob", "carol", "zed")
	if want := map[string]int64{"bob": 120, "carol": 7}; err != nil || !maps.Equal(got, want) {
		s.t.Fatalf("last seen: %v (%v), want %v (the latest of each, none for a user never seen)", got, err, want)
	}
	if got, err := n2.LastSeen(s.ctx); err != nil || len(got) != 0 {
		s.t.Fatalf("last seen of no one: %v, %v", got, err)
	}
	many := make([]string, store.MaxLastSeenUsers+1)
	for i := range many {
		many[i] = "u" + strconv.Itoa(i)
	}
	if _, err := n1.LastSeen(s.ctx, many...); !errors.Is(err, store.ErrTooMany) {
		s.t.Fatalf("last seen of %d users: %v, want ErrTooMany", len(many), err)
	}
	if err := n1.SetLastSeen(s.ctx, "b ob", 1); !errors.Is(err, store.ErrInvalid) {
		s.t.Fatalf("set last seen of a malformed user: %v, want ErrInvalid", err)
	}
	if _, err := n1.LastSeen(s.ctx, "bob", ""); !errors.Is(err, store.ErrInvalid) {
		s.t.Fatalf("last seen of an empty user: %v, want ErrInvalid", err)
	}
}
