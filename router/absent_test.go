package router

import (
	"fmt"
	"testing"
	"time"
)

// A group's members who are away are watched by their owner, within a
// bound, so that a sender may cache "no connection" for them and hear of
// the first one.
func TestAbsentKeysAreWatchedWithinABoundAndToldOfTheirFirstConnection(t *testing.T) {
	d := newDirectory(nil)
	now := time.Now()
	owns := func(Key) bool { return true }
	away := Key{Name: "away"}
	if locs, watched := d.WatchAbsent(away, "n1", now.Add(time.Minute)); locs != nil || !watched {
		t.Fatalf("an absent key: %v, watched %v; want none, watched", locs, watched)
	}
	if tell := d.Set(away, "n2", "i", 1, now); len(tell) != 1 || tell[0] != "n1" {
		t.Fatalf("its first connection told %v, want n1", tell)
	}
	if tell := d.Set(away, "n3", "i", 1, now); len(tell) != 0 {
		t.Fatalf("a second holder told %v, want no one: n1's empty answer was dropped already", tell)
	}
	if locs, watched := d.WatchAbsent(away, "n1", now.Add(time.Minute)); len(locs) != 2 || !watched {
		t.Fatalf("a key that has connections: %v, watched %v; want its two nodes, watched", locs, watched)
	}

	expired := Key{Name: "expired"}
	d.WatchAbsent(expired, "n1", now.Add(-time.Second))
	if tell := d.Set(expired, "n2", "i", 1, now); len(tell) != 0 {
		t.Fatalf("an expired watch was told: %v", tell)
	}

	for i := 0; i < maxAbsent; i++ {
		if _, watched := d.WatchAbsent(Key{Name: fmt.Sprint("a", i)}, "n1", now.Add(time.Minute)); !watched {
			t.Fatalf("absent key %d of at most %d not watched", i, maxAbsent)
		}
	}
	if _, watched := d.WatchAbsent(Key{Name: "one-too-many"}, "n1", now.Add(time.Minute)); watched {
		t.Fatalf("%d absent keys watched, want at most %d", maxAbsent+1, maxAbsent)
	}
	if _, watched := d.WatchAbsent(Key{Name: "a7"}, "n2", now.Add(time.Minute)); !watched {
		t.Fatal("a key watched already was refused another watcher at the bound")
	}
	d.Retain(func(node, _ string) bool { return node != "n2" }, owns, owns, now)
	if tell := d.Set(Key{Name: "a7"}, "n3", "i", 1, now); len(tell) != 1 || tell[0] != "n1" {
		t.Fatalf("after n2 left: %v, want n1 alone told", tell)
	}
	d.Sweep(now.Add(2*time.Minute), owns)
	if n := len(d.absent); n != 0 {
		t.Fatalf("%d absent keys left after their watches expired", n)
	}
	if d.Len() != 2 { // away and a7, held on n3; expired was held on n2 alone
		t.Fatalf("%d directory entries, want the 2 keys still held", d.Len())
	}
}
