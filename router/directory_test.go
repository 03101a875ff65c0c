package router

import (
	"fmt"
	"sort"
	"testing"
	"time"
)

func TestDirectoryTellsWatchersOnceWhenAKeyChanges(t *testing.T) {
	d := newDirectory(nil)
	now := time.Now()
	bob := Key{Name: "bob"}
	d.Set(bob, "n2", "i", 1, now)
	if locs, _ := d.Lookup(bob, "n1", now.Add(time.Minute)); len(locs) != 1 || locs[0] != (Location{"n2", 1}) {
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
	yes, no := func(Key) bool { return true }, func(Key) bool { return false }
	d.Retain(func(n, _ string) bool { return n != "n2" }, yes, yes, now)
	if locs := d.Holders(bob); len(locs) != 1 || locs[0].Node != "n1" {
		t.Fatalf("after n2 left: %v, want only n1", locs)
	}
	d.Retain(func(_, _ string) bool { return true }, yes, no, now.Add(strayGrace))
	d.Sweep(now.Add(2*strayGrace), func(Key) bool { return false })
	if d.Len() != 0 {
		t.Fatalf("entries for keys no longer owned: %d", d.Len())
	}
}

// A lookup of a key no node holds is watched, so that its asker may cache
// that nobody holds it, and hears of the key's first connection; but only
// while the owner watches fewer than maxUnknown such keys: past that an
// empty answer is neither watched nor cached, so that sends to made-up
// users leave a bounded trace.
func TestEmptyAnswersAreWatchedAndCachedUpToABound(t *testing.T) {
	d := newDirectory(nil)
	d.maxUnknown = 10
	cache := newLocationCache(1000)
	now := time.Now()
	for i := 0; i < 100; i++ {
		key := Key{Name: fmt.Sprintf("ghost%d", i)}
		locs, watched := d.Lookup(key, "n1", now.Add(time.Minute))
		_, _, f, _ := cache.get(key, now)
		cache.finish(key, f, locs, nil, watched, now.Add(time.Minute))
	}
	if d.Len() != 10 || cache.len() != 10 {
		t.Fatalf("100 lookups of keys nobody holds left %d directory entries and %d cached answers, want the bound, 10", d.Len(), cache.len())
	}
	ghost, past := Key{Name: "ghost7"}, Key{Name: "ghost70"}
	if tell := d.Set(ghost, "n2", "i", 1, now); len(tell) != 1 || tell[0] != "n1" {
		t.Fatalf("the node that cached that nobody holds %s was told %v of its first connection, want n1", ghost.Name, tell)
	}
	if tell := d.Set(past, "n2", "i", 1, now); len(tell) != 0 {
		t.Fatalf("watchers told of a key past the bound, which nobody watched: %v", tell)
	}
	if locs, _ := d.Lookup(ghost, "n1", now.Add(time.Minute)); len(locs) != 1 {
		t.Fatalf("after its first registration: %v", locs)
	}
	if tell := d.Set(ghost, "n2", "i", 0, now); len(tell) != 1 || tell[0] != "n1" {
		t.Fatalf("the watcher of a key with connections was not told it has none: %v", tell)
	}
	d.Sweep(now.Add(2*time.Minute), func(Key) bool { return true })
	if n := d.Len(); n != 1 {
		t.Fatalf("%d entries after their watches expired, want 1 (%s's connection)", n, past.Name)
	}
}

// A draining node learns first that it left, and registers its connections
// with their new owners before those owners' rings have changed; an owner
// may even apply another change first. A sweep or a ring change in that
// window dropped them, and the new owner then answered "offline" for users
// who were connected.
func TestDirectoryKeepsARegistrationThatArrivesAheadOfItsRing(t *testing.T) {
	d := newDirectory(nil)
	now := time.Now()
	bob, ann := Key{Name: "bob"}, Key{Name: "ann"}
	all := func(_, _ string) bool { return true }
	notYet := func(Key) bool { return false }
	d.Set(bob, "n3", "i", 1, now)
	d.Set(ann, "n2", "i", 1, now)
	// Another change, then a sweep, before the one that gives us bob.
	d.Retain(all, notYet, notYet, now.Add(time.Second))
	d.Sweep(now.Add(2*time.Second), notYet)
	d.Retain(all, notYet, func(k Key) bool { return k == bob }, now.Add(3*time.Second))
	if locs := d.Holders(bob); len(locs) != 1 || locs[0] != (Location{"n3", 1}) {
		t.Fatalf("bob after the ring caught up: %v, want [{n3 1}]", locs)
	}
	// A key this node does not come to own goes once its grace is over;
	// a new registration starts a new grace.
	d.Set(ann, "n2", "i", 2, now.Add(strayGrace-time.Second))
	d.Sweep(now.Add(strayGrace), notYet)
	if d.Len() != 2 {
		t.Fatalf("%d entries after a registration renewed ann's grace, want 2", d.Len())
	}
	d.Sweep(now.Add(3*strayGrace), func(k Key) bool { return k == bob })
	if d.Len() != 1 || len(d.Holders(bob)) != 1 {
		t.Fatalf("after ann's grace: %d entries, want only bob's", d.Len())
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
	c.finish(k, f, []Location{{"n1", 1}}, nil, true, now.Add(time.Minute))
	if _, hit, _, _ := c.get(k, now); hit {
		t.Fatal("an answer spoiled while in flight was cached")
	}
}

func BenchmarkDirectoryLookup(b *testing.B) {
	d := newDirectory(nil)
	now := time.Now()
	for i := 0; i < 100000; i++ {
		d.Set(Key{Name: fmt.Sprintf("user%d", i)}, fmt.Sprintf("n%d", i%5), "i", 1, now)
	}
	k := Key{Name: "user4242"}
	b.ReportAllocs()
	for b.Loop() {
		d.Holders(k)
	}
}

func BenchmarkLocationCacheHit(b *testing.B) {
	c := newLocationCache(100000)
	now := time.Now()
	k := Key{Name: "bob"}
	_, _, f, _ := c.get(k, now)
	c.finish(k, f, []Location{{"n2", 1}}, nil, true, now.Add(time.Hour))
	b.ReportAllocs()
	for b.Loop() {
		if _, hit, _, _ := c.get(k, now); !hit {
			b.Fatal("miss")
		}
	}
}

// A key that moves away and comes back within strayGrace must not bring
// back the counts it had: its holders registered with the owner in between,
// and told that one, not this node, of the connections that closed since.
func TestDirectoryForgetsAKeyThatMovedAway(t *testing.T) {
	d := newDirectory(nil)
	now := time.Now()
	bob := Key{Name: "bob"}
	all := func(_, _ string) bool { return true }
	yes, no := func(Key) bool { return true }, func(Key) bool { return false }
	d.Set(bob, "n2", "i", 1, now)
	if movedAway := d.Retain(all, yes, no, now.Add(time.Second)); !movedAway["n2"] || len(movedAway) != 1 {
		t.Fatalf("Retain says it dropped counts of keys that moved away from %v, want n2's", movedAway)
	}
	d.Retain(all, no, yes, now.Add(2*time.Second))
	if locs := d.Holders(bob); len(locs) != 0 {
		t.Fatalf("bob back at this owner: %v, want nothing until his holders register again", locs)
	}
}

// When a ring change drops a key's last holder (its node died), the entry
// stays for the watchers of its old answer. A sender that asks meanwhile
// caches that nobody holds the key, and must hear of its next connection
// as a sender that asked before the key ever had one would: else it
// answers "offline" for a connected user until its cache entry expires.
func TestEmptyAnswerAfterAHolderDiedIsToldOfTheNextConnection(t *testing.T) {
	d := newDirectory(nil)
	now := time.Now()
	bob := Key{Name: "bob"}
	owns := func(Key) bool { return true }
	d.Set(bob, "n2", "i", 1, now)
	d.Lookup(bob, "n1", now.Add(time.Minute))
	d.Retain(func(node, _ string) bool { return node != "n2" }, owns, owns, now) // n2 died
	if locs, watched := d.Lookup(bob, "n3", now.Add(time.Minute)); len(locs) != 0 || !watched {
		t.Fatalf("bob after his only node died: %v, watched %v; want nobody, watched", locs, watched)
	}
	tell := d.Set(bob, "n4", "i", 1, now) // bob reconnects on n4
	sort.Strings(tell)
	if len(tell) != 2 || tell[0] != "n1" || tell[1] != "n3" {
		t.Fatalf("bob's next connection told %v, want n1 and n3: n3 cached that nobody holds him", tell)
	}
}
