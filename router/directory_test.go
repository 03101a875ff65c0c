package router

import (
	"fmt"
	"testing"
	"time"
)

func TestDirectoryTellsWatchersOnceWhenAKeyChanges(t *testing.T) {
	d := newDirectory()
	now := time.Now()
	bob := Key{Name: "bob"}
	d.Set(bob, "n2", "i", 1, now)
	if locs := d.Lookup(bob, "n1", now.Add(time.Minute)); len(locs) != 1 || locs[0] != (Location{"n2", 1}) {
		t.Fatalf("lookup: %v", locs)
	}
	d.Lookup(bob, "n3", now.Add(-time.Second)) // an expired watch
	if tell := d.Set(bob, "n2", "i", 2, now); len(tell) != 1 || tell[0] != "n1" {
		t.Fatalf("watchers told: %v, want [n1]", tell)
	}
	if tell := d.Set(bob, "n2", "i", 1, now); len(tell) != 0 {
		t.Fatalf("watchers told twice: %v", tell)
	}
	d.Lookup(bob, "n1", now.Add(time.Minute))
	if tell := d.Set(bob, "n1", "i", 1, now); len(tell) != 0 {
		t.Fatalf("the registering node was told of its own change: %v", tell)
	}
	d.Retain(func(n, _ string) bool { return n != "n2" }, func(Key) bool { return true })
	if locs := d.Lookup(bob, "", time.Time{}); len(locs) != 1 || locs[0].Node != "n1" {
		t.Fatalf("after n2 left: %v, want only n1", locs)
	}
	d.Retain(func(_, _ string) bool { return true }, func(Key) bool { return false })
	if d.Len() != 0 {
		t.Fatalf("entries for keys no longer owned: %d", d.Len())
	}
}

// A draining node learns first that it left, and registers its connections
// with their new owners before those owners' rings have changed. A sweep in
// that window dropped them, and the new owner then answered "offline" for
// users who were connected.
func TestDirectoryKeepsARegistrationThatArrivesAheadOfItsRing(t *testing.T) {
	d := newDirectory()
	now := time.Now()
	bob, ann := Key{Name: "bob"}, Key{Name: "ann"}
	d.Set(bob, "n3", "i", 1, now)
	d.Set(ann, "n2", "i", 1, now)
	notYet := func(Key) bool { return false }
	// A sweep while this node's ring has not changed yet, then the change.
	d.Sweep(now, notYet)
	d.Retain(func(_, _ string) bool { return true }, func(k Key) bool { return k == bob })
	if locs := d.Lookup(bob, "", time.Time{}); len(locs) != 1 || locs[0] != (Location{"n3", 1}) {
		t.Fatalf("bob after the ring caught up: %v, want [{n3 1}]", locs)
	}
	d.Sweep(now, func(k Key) bool { return k == bob })
	if locs := d.Lookup(bob, "", time.Time{}); len(locs) != 1 {
		t.Fatalf("a sweep dropped bob, whom this node owns: %v", locs)
	}
	// A key this node never comes to own goes at the second sweep.
	d.Set(ann, "n2", "i", 1, now)
	d.Sweep(now, notYet)
	d.Sweep(now, notYet)
	if d.Len() != 0 {
		t.Fatalf("%d entries left for keys not owned at two sweeps", d.Len())
	}
}

func TestLocationCacheDropsAnswersSpoiledInFlight(t *testing.T) {
	c := newLocationCache(10)
	k := Key{Name: "bob"}
	now := time.Now()
	_, _, f, leader := c.get(k, now)
	if !leader {
		t.Fatal("first get is not the leader")
	}
	c.invalidate(k) // the owner's change overtook its answer
	c.finish(k, f, []Location{{"n1", 1}}, nil, now.Add(time.Minute))
	if _, hit, _, _ := c.get(k, now); hit {
		t.Fatal("an answer spoiled while in flight was cached")
	}
}

func BenchmarkDirectoryLookup(b *testing.B) {
	d := newDirectory()
	now := time.Now()
	for i := 0; i < 100000; i++ {
		d.Set(Key{Name: fmt.Sprintf("user%d", i)}, fmt.Sprintf("n%d", i%5), "i", 1, now)
	}
	k := Key{Name: "user4242"}
	b.ReportAllocs()
	for b.Loop() {
		d.Lookup(k, "", time.Time{})
	}
}

func BenchmarkLocationCacheHit(b *testing.B) {
	c := newLocationCache(100000)
	now := time.Now()
	k := Key{Name: "bob"}
	_, _, f, _ := c.get(k, now)
	c.finish(k, f, []Location{{"n2", 1}}, nil, now.Add(time.Hour))
	b.ReportAllocs()
	for b.Loop() {
		if _, hit, _, _ := c.get(k, now); !hit {
			b.Fatal("miss")
		}
	}
}
