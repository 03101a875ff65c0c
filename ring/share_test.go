package ring

import "testing"

// The cluster view draws each member's arc from its share: the arcs must
// close the circle, and follow the bounded load of consistent.
func TestSharesCoverEveryPartitionWithinTheLoadBound(t *testing.T) {
	r := mustNew(t, "n1", "n2", "n3")
	total := 0
	for _, name := range r.Members() {
		s := r.Share(name)
		// consistent's bound: ceil(floor(P/members) * load) partitions at most.
		if s == 0 || float64(s) > float64(Partitions/3)*load+1 {
			t.Errorf("%s owns %d of %d partitions: outside the bounded load of 3 members", name, s, Partitions)
		}
		total += s
	}
	if total != Partitions {
		t.Fatalf("the shares of the members add up to %d partitions, want %d", total, Partitions)
	}
	if s := r.Share("n4"); s != 0 {
		t.Fatalf("a name that is not a member owns %d partitions, want 0", s)
	}
	empty := mustNew(t)
	if s := empty.Share("n1"); s != 0 {
		t.Fatalf("the empty ring gives n1 %d partitions, want 0", s)
	}
}
