package ring

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
)

// The cluster view draws each member's arc from its share: the arcs must
// close the circle, and follow the bounded load of consistent.
func TestSharesCoverEveryPartitionWithinTheLoadBound(t *testing.T) {
	r := mustNew(t, "n1", "n2", "n3")
	total, load := 0, schemes[r.Scheme()].load
	for _, name := range r.Members() {
		s := r.Share(name)
		// consistent's bound: ceil(floor(P/members) * load) partitions at most.
		if s == 0 || float64(s) > float64(r.Partitions()/3)*load+1 {
			t.Errorf("%s owns %d of %d partitions: outside the bounded load of 3 members", name, s, r.Partitions())
		}
		total += s
	}
	if total != r.Partitions() {
		t.Fatalf("the shares of the members add up to %d partitions, want %d", total, r.Partitions())
	}
	if s := r.Share("n4"); s != 0 {
		t.Fatalf("a name that is not a member owns %d partitions, want 0", s)
	}
	empty := mustNew(t)
	if s := empty.Share("n1"); s != 0 {
		t.Fatalf("the empty ring gives n1 %d partitions, want 0", s)
	}
}

// After a change, a member not among the gainers owns no key it did not own
// before, so it need wait for no one to re-register. A join to 64 members
// gives new keys to the newcomer and hardly any other, a leave to the
// members next to the leaver's 400 points: nearly all (62 of 63).
func TestGainersAreTheMembersGivenKeys(t *testing.T) {
	names := make([]string, 64)
	for i := range names {
		names[i] = fmt.Sprintf("node-%d", i)
	}
	before := mustNew(t, names...)
	joined := mustNew(t, append(slices.Clone(names), "node-new")...)
	left := mustNew(t, names[1:]...)
	for _, c := range []struct {
		name      string
		old, next *Ring
		most      int
	}{{"a join", before, joined, 8}, {"a leave", before, left, 63}} {
		gainers := c.next.Gainers(c.old)
		if len(gainers) == 0 || len(gainers) > c.most {
			t.Errorf("%s to 64 members gave new partitions to %d members, want 1 to %d: %v", c.name, len(gainers), c.most, gainers)
		}
		for i := range 10000 {
			key := "user-" + strconv.Itoa(i)
			if owner := c.next.Owner(key); owner != c.old.Owner(key) && !slices.Contains(gainers, owner) {
				t.Fatalf("%s moved %q from %s to %s, which is not among the gainers %v", c.name, key, c.old.Owner(key), owner, gainers)
			}
		}
	}
	if g := joined.Gainers(before); !slices.Contains(g, "node-new") {
		t.Errorf("the gainers of a join %v lack the newcomer", g)
	}
	if g := joined.Gainers(joined); len(g) != 0 {
		t.Errorf("no change gave new partitions to %v", g)
	}
	if g := before.Gainers(mustNew(t)); !slices.Equal(g, before.Members()) {
		t.Errorf("from the empty ring the gainers are %d members, want all 64", len(g))
	}
	original, err := NewScheme(Original, names)
	if err != nil {
		t.Fatal(err)
	}
	if g := before.Gainers(original); !slices.Equal(g, before.Members()) {
		t.Errorf("from the same members on another scheme the gainers are %d members, want all 64", len(g))
	}
	// What moved is the newcomer's share, give or take what bounded loads
	// shuffle; nothing without a change, everything to another scheme.
	if m, share := joined.Moved(before), float64(joined.Share("node-new"))/float64(joined.Partitions()); m < share || m > 1.2*share {
		t.Errorf("a join moved %.4f of the keys, the newcomer's share is %.4f", m, share)
	}
	if m := joined.Moved(joined); m != 0 {
		t.Errorf("no change moved %.4f of the keys", m)
	}
	if m := before.Moved(original); m != 1 {
		t.Errorf("a change of scheme moved %.4f of the keys, want all", m)
	}
}
