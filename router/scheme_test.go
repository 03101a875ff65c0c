package router

import (
	"fmt"
	"slices"
	"testing"

	"github.com/shardchat/shard/ring"
)

// While a member of a build before ring schemes is in the cluster, every
// node routes as it does: by ring.Original, with the version that build
// computes for the same members (the value below is what it computed), so
// that their lookups and synced reports agree.
func TestClusterRoutesByTheOldestSchemeAMemberKnows(t *testing.T) {
	a, aLink := testRouter(t, "a")
	withOld := []Member{{Name: "a", Link: aLink, Inc: "a-1"}, {Name: "b", Link: "127.0.0.1:1", Inc: "b-1", Ring: ring.Original}}
	if got := RingVersion(withOld); got != "065c9c114b3389c0" {
		t.Fatalf("version with a member of an older build %s, that build computes 065c9c114b3389c0", got)
	}
	_ = a.SetMembers(withOld) // b never answers: not this test's concern
	original, err := ring.NewScheme(ring.Original, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	if s := a.Ring().Scheme(); s != ring.Original {
		t.Fatalf("a routes by scheme %d with a member that knows only %d", s, ring.Original)
	}
	for i := range 1000 {
		if k := fmt.Sprintf("user%d", i); a.Ring().Owner(k) != original.Owner(k) {
			t.Fatalf("%s: owner %s, an older build says %s", k, a.Ring().Owner(k), original.Owner(k))
		}
	}
	// b drains: listed left, it owns nothing, and gossip may list it for a
	// minute more without a change to say when it forgets it.
	_ = a.SetMembers([]Member{withOld[0], {Name: "b", Link: "127.0.0.1:1", Inc: "b-1", Ring: ring.Original, Left: true}})
	if s := a.Ring().Scheme(); s != ring.Latest {
		t.Fatalf("a routes by scheme %d while the only member of an older build is leaving", s)
	}
	// b drains by its own ring, under another version: a does not wait for
	// its report, which would never count (misses would be "not known yet"
	// for settleTimeout).
	if waiting, _ := a.settle.waitingFor(a.view.Load().version); slices.Contains(waiting, "b") {
		t.Fatalf("a waits for %v, the leaving member of an older scheme among them", waiting)
	}
	upgraded := []Member{withOld[0], {Name: "b", Link: "127.0.0.1:1", Inc: "b-2"}}
	_ = a.SetMembers(upgraded)
	if s := a.Ring().Scheme(); s != ring.Latest {
		t.Fatalf("a routes by scheme %d once every member knows %d", s, ring.Latest)
	}
	if RingVersion(upgraded) == RingVersion([]Member{withOld[0], {Name: "b", Inc: "b-2", Ring: ring.Original}}) {
		t.Fatal("the same members on two schemes have one version")
	}
}

// When the cluster moves to a newer scheme nearly every key changes owner:
// every holder registers again, and every directory is right afterwards.
func TestDirectoriesAreRightAfterTheClusterMovesToANewerScheme(t *testing.T) {
	a, aLink := testRouter(t, "a")
	b, bLink := testRouter(t, "b")
	ma := Member{Name: "a", Link: aLink, Inc: "a-1"}
	old := []Member{ma, {Name: "b", Link: bLink, Inc: "b-1", Ring: ring.Original}}
	for _, r := range []*Router{a, b} {
		if err := r.SetMembers(old); err != nil {
			t.Fatal(err)
		}
	}
	holders := map[string]*Router{"a": a, "b": b}
	users := make(map[string]string) // user -> the node it is connected to
	for i := range 40 {
		user, at := fmt.Sprintf("user%d", i), []string{"a", "b"}[i%2]
		if err := holders[at].Attach(newTestConn(uint64(i+1), user)); err != nil {
			t.Fatal(err)
		}
		users[user] = at
	}
	moved := 0
	before := a.Ring()
	// b now announces the newer scheme, under the same incarnation: the
	// change of scheme alone must move the keys.
	upgraded := []Member{ma, {Name: "b", Link: bLink, Inc: "b-1"}}
	for _, r := range []*Router{b, a} {
		if err := r.SetMembers(upgraded); err != nil {
			t.Fatal(err)
		}
	}
	for user, at := range users {
		if before.Owner(user) != a.Ring().Owner(user) {
			moved++
		}
		locatedAt(t, holders[a.Ring().Owner(user)], Key{Name: user}, at)
	}
	if moved == 0 {
		t.Fatal("no key changed owner with the scheme: the test shows nothing")
	}
}
