package router

import (
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/link"
)

// skippedViewScenario finds members x and y and a user such that, on the
// views {a, b, x}, {a, b, x, y} and {a, b}, the user's owner is b, then y,
// then b again, and b gains partitions from the first view to the last (so
// a, going straight from the first to the last, tells b it is in sync).
func skippedViewScenario(t *testing.T) (user, x, y string) {
	t.Helper()
	last := mustRing(t, "a", "b")
	for i := range 100 {
		x = fmt.Sprintf("x%d", i)
		first := mustRing(t, "a", "b", x)
		if !slices.Contains(last.Gainers(first), "b") {
			continue
		}
		for j := range 20 {
			y = fmt.Sprintf("y%d", j)
			between := mustRing(t, "a", "b", x, y)
			for k := range 1000 {
				user = fmt.Sprintf("user%d", k)
				if first.Owner(user) == "b" && between.Owner(user) == y && last.Owner(user) == "b" {
					return user, x, y
				}
			}
		}
	}
	t.Fatal("no users, members and views for the scenario")
	return "", "", ""
}

// connectAtAOwnedByB puts routers a and b on the view first, then connects
// user, whom b owns, at a, and waits until b knows where the user is. The
// registrations with members that never answer fail: not the tests'
// concern.
func connectAtAOwnedByB(t *testing.T, a, b *Router, first []Member, user string) {
	t.Helper()
	_ = a.SetMembers(first)
	_ = b.SetMembers(first)
	// b asked a, new to it, to register again; that resync must be over
	// before the user connects, or it could bring the entry back late.
	wait.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if n := served(b, kindSynced); n < 2 {
			return fmt.Errorf("b heard %v synced reports from a, want its change's and its resync's", n)
		}
		return nil
	})
	if err := a.Attach(newTestConn(1, user)); err != nil {
		t.Fatal(err)
	}
	locatedAt(t, b, Key{Name: user}, "a")
}

// A holder that never saw a view (y joined and left before it heard of y)
// re-registers only what moved between the two views it saw. Its user's
// partition went from b to y and back in the view it skipped, so b had
// dropped the entry, and a, seeing no change of owner, did not send it
// again: b answered "offline" for a connected user until the user's
// connections changed. b now hears that a moved from another view than b
// did, and asks it to register again.
func TestHolderThatSkippedAViewRegistersAgainWhatTheOwnerDropped(t *testing.T) {
	a, aLink := testRouter(t, "a")
	b, bLink := testRouter(t, "b")
	user, x, y := skippedViewScenario(t)
	ma, mb := Member{Name: "a", Link: aLink, Inc: "a-1"}, Member{Name: "b", Link: bLink, Inc: "b-1"}
	// x and y are members that never answer: nothing listens on port 1.
	mx, my := Member{Name: x, Link: "127.0.0.1:1", Inc: x + "-1"}, Member{Name: y, Link: "127.0.0.1:1", Inc: y + "-1"}
	connectAtAOwnedByB(t, a, b, []Member{ma, mb, mx}, user)

	_ = b.SetMembers([]Member{ma, mb, mx, my}) // y joins: b drops the user's entry
	_ = b.SetMembers([]Member{ma, mb})         // x and y are gone
	_ = a.SetMembers([]Member{ma, mb})         // a never heard of y
	locatedAt(t, b, Key{Name: user}, "a")
}

// An owner of an older build refuses a synced report that says which
// version its sender moved from (it reads one field and answers nothing);
// a newer node tells it again in the form it reads, so that it does not
// wait for a report it can take until its settle deadline.
func TestOwnerOfAnOlderBuildIsToldInSyncInTheFormItReads(t *testing.T) {
	a, aLink := testRouter(t, "a")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	old := link.New(link.Config{Self: "b", Inc: "b-1", RequestTimeout: time.Second}, ln)
	t.Cleanup(old.Close)
	var mu sync.Mutex
	var taken []string // the versions the older owner counted
	old.Serve(func(_ link.Peer, k link.Kind, p []byte, reply func([]byte)) {
		if kind(k) == kindSynced {
			d := link.NewDecoder(p)
			version := d.String()
			if d.Done() == nil {
				mu.Lock()
				taken = append(taken, version)
				mu.Unlock()
			}
		}
		reply(nil)
	})
	old.SetPeers(map[string]link.Member{"a": {Addr: aLink, Inc: "a-1"}})
	if err := a.SetMembers([]Member{{Name: "a", Link: aLink, Inc: "a-1"}, {Name: "b", Link: ln.Addr().String(), Inc: "b-1"}}); err != nil {
		t.Fatal(err)
	}
	version := a.view.Load().version
	a.tellSynced("b", version, "the version a moved from")
	wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		// One from a's first view (everything registered, sent without a
		// from), one told again after the refused report.
		if want := []string{version, version}; !slices.Equal(taken, want) {
			return fmt.Errorf("the older owner took synced for %q, want %q", taken, want)
		}
		return nil
	})
}

// The settlement counts a report made on moving from the version this node
// moved from, or one that registered everything, and asks again for any
// other; reports that come before their version do the same once it does.
func TestSettlementCountsOnlyReportsFromTheSameChange(t *testing.T) {
	var s settlement
	now := time.Now()
	s.synced("v2", "early-same", "v1")
	s.synced("v2", "early-other", "v0")
	s.synced("v2", "early-all", "")
	if resync := s.reset("v2", "v1", []string{"same", "other", "all", "early-same", "early-other", "early-all"}, now); !slices.Equal(resync, []string{"early-other"}) {
		t.Fatalf("reset asks %v to register again, want the early report from another change, [early-other]", resync)
	}
	if s.synced("v2", "same", "v1") || s.synced("v2", "all", "") {
		t.Fatal("a report from the same change, or of everything, was asked again")
	}
	if !s.synced("v2", "other", "v0") {
		t.Fatal("a report from another change was not asked again")
	}
	if s.synced("v2", "stranger", "v0") {
		t.Fatal("a member not waited for was asked again")
	}
	waiting, _ := s.waitingFor("v2")
	slices.Sort(waiting)
	if want := []string{"early-other", "other"}; !slices.Equal(waiting, want) {
		t.Fatalf("waiting for %v, want %v", waiting, want)
	}
	if s.settled("v2", now) {
		t.Fatal("settled while waiting")
	}
	s.synced("v2", "other", "")
	s.synced("v2", "early-other", "")
	if !s.settled("v2", now) {
		t.Fatal("not settled once every member reported everything")
	}
}

// served is how many requests of kind k r has served.
func served(r *Router, k kind) float64 {
	var m dto.Metric
	r.m.PeerReplies.WithLabelValues(k.String()).Write(&m)
	return m.GetCounter().GetValue()
}

// A holder two views ahead of an owner registers a key with it that the
// owner's next view moves away and the one after brings back: the owner,
// on its way, drops the entry the holder already sent for the last view,
// and must not count the holder's report for that view. The holder went
// {a, b, x} -> {a, b, x, y} -> {a, b} while b was still on the first.
func TestHolderAheadOfTheOwnerRegistersAgainWhatTheOwnerDroppedOnItsWay(t *testing.T) {
	a, aLink := testRouter(t, "a")
	b, bLink := testRouter(t, "b")
	user, x, y := skippedViewScenario(t)
	yr, yLink := testRouter(t, y)
	ma, mb := Member{Name: "a", Link: aLink, Inc: "a-1"}, Member{Name: "b", Link: bLink, Inc: "b-1"}
	mx, my := Member{Name: x, Link: "127.0.0.1:1", Inc: x + "-1"}, Member{Name: y, Link: yLink, Inc: y + "-1"}
	first, between, last := []Member{ma, mb, mx}, []Member{ma, mb, mx, my}, []Member{ma, mb}
	connectAtAOwnedByB(t, a, b, first, user)

	_ = yr.SetMembers(between)
	_ = a.SetMembers(between)
	heard := served(b, kindSynced)
	_ = a.SetMembers(last) // registers the user with b, still on the first view, and says so
	wait.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if n := served(b, kindSynced); n <= heard {
			return fmt.Errorf("b heard no synced report of a's last view yet")
		}
		return nil
	})
	_ = b.SetMembers(between) // the key moves to y: b drops the entry a sent for the last view
	_ = b.SetMembers(last)
	locatedAt(t, b, Key{Name: user}, "a")
}

// The settlement does not count a report that came ahead of its version
// from a holder whose entries this node dropped on its way there, whether
// the report came before the drop or after it.
func TestSettlementDoesNotCountAReportAheadFromAHolderWhoseEntriesItDropped(t *testing.T) {
	var s settlement
	now := time.Now()
	s.reset("v1", "v0", nil, now)
	s.synced("v3", "before", "v2")
	s.reset("v2", "v1", nil, now)
	s.holdersDropped(map[string]bool{"before": true, "after": true})
	s.synced("v3", "after", "")
	s.synced("v3", "untouched", "v2")
	resync := s.reset("v3", "v2", []string{"before", "after", "untouched"}, now)
	slices.Sort(resync)
	if want := []string{"after", "before"}; !slices.Equal(resync, want) {
		t.Fatalf("reset asks %v to register again, want %v", resync, want)
	}
	if waiting, _ := s.waitingFor("v3"); slices.Contains(waiting, "untouched") {
		t.Fatal("the report of a holder whose entries stayed was not counted")
	}
}
