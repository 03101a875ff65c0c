package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/link"
	"github.com/shardchat/shard/ring"
)

func testRouter(t testing.TB, name string) (*Router, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	links := link.New(link.Config{Self: name, Inc: name + "-1", RequestTimeout: time.Second}, ln)
	r := New(Config{Self: name, Incarnation: name + "-1", Metrics: NewMetrics(prometheus.NewRegistry())}, links)
	t.Cleanup(r.Close)
	return r, ln.Addr().String()
}

// relay forwards connections on its address to target while up; while
// down it drops them at once, as a link that keeps breaking would.
type relay struct {
	ln      net.Listener
	target  string
	mu      sync.Mutex
	up      bool
	open    []net.Conn
	refused int // connections dropped while down
}

func newRelay(t *testing.T, target string) *relay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &relay{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.set(false) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if !p.up {
				c.Close()
				u.Close()
				p.refused++
			} else {
				p.open = append(p.open, c, u)
				go func() { io.Copy(u, c); u.Close() }()
				go func() { io.Copy(c, u); c.Close() }()
			}
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *relay) addr() string { return p.ln.Addr().String() }

// refusedAny waits until the relay has dropped a connection while down.
func (p *relay) refusedAny(t *testing.T) {
	t.Helper()
	wait.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.refused == 0 {
			return errors.New("no connection tried the relay yet")
		}
		return nil
	})
}

// set brings the relay up, or down, which also cuts what it carries.
func (p *relay) set(up bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.up = up
	if !up {
		for _, c := range p.open {
			c.Close()
		}
		p.open = nil
	}
}

// ownedBy returns a user name that owner owns on a ring of members.
func ownedBy(t *testing.T, owner string, members ...string) string {
	rg, err := ring.New(members)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if name := fmt.Sprintf("user%d", i); rg.Owner(name) == owner {
			return name
		}
	}
}

// locatedAt waits until owner says key's connections are at nodes.
func locatedAt(t *testing.T, owner *Router, key Key, nodes ...string) {
	t.Helper()
	wait.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		locs, err := owner.Locations(ctx, key)
		if err != nil {
			return err
		}
		var got []string
		for _, l := range locs {
			got = append(got, l.Node)
		}
		if !slices.Equal(got, nodes) {
			return fmt.Errorf("owner says %s is at %v, want %v", key, got, nodes)
		}
		return nil
	})
}

// A holder whose registration with a key's new owner failed (the link was
// down for a moment) used to tell that owner it was in sync all the same,
// and never registered again: the owner answered "offline" for a user who
// was connected, until the next ring change.
func TestRegistrationThatFailedIsRetriedBeforeTheOwnerCountsIt(t *testing.T) {
	a, aLink := testRouter(t, "a")
	b, bLink := testRouter(t, "b")
	user := ownedBy(t, "b", "a", "b")

	// a holds the user's connection while it is alone.
	if err := a.SetMembers([]Member{{Name: "a", Link: aLink, Inc: "a-1"}}); err != nil {
		t.Fatal(err)
	}
	if err := a.Attach(newTestConn(1, user)); err != nil {
		t.Fatal(err)
	}

	// b joins; a reaches b through a relay that is down for now.
	relay := newRelay(t, bLink)
	members := func(bAt string) []Member {
		return []Member{{Name: "a", Link: aLink, Inc: "a-1"}, {Name: "b", Link: bAt, Inc: "b-1"}}
	}
	if err := b.SetMembers(members(bLink)); err != nil {
		t.Fatal(err)
	}
	if err := a.SetMembers(members(relay.addr())); err == nil {
		t.Fatal("registering through a link that is down succeeded")
	}
	relay.set(true)
	locatedAt(t, b, Key{Name: user}, "a")
}

// A connection that closes while the link to its owner is broken used to
// stay listed there: the user showed online, and messages went to a node
// that had nobody, until the user's count changed again. Later, retries
// gave up after about 30 s, which left the same hole after a longer cut of
// the link alone (gossip still finding the owner alive).
func TestUnregistrationThatFailedIsSentAgain(t *testing.T) {
	for _, long := range []bool{false, true} {
		t.Run(map[bool]string{false: "brief cut", true: "cut past the fast rounds"}[long], func(t *testing.T) {
			a, aLink := testRouter(t, "a")
			b, bLink := testRouter(t, "b")
			relay := newRelay(t, bLink)
			relay.set(true)
			members := []Member{{Name: "a", Link: aLink, Inc: "a-1"}, {Name: "b", Link: relay.addr(), Inc: "b-1"}}
			if err := b.SetMembers(members); err != nil {
				t.Fatal(err)
			}
			if err := a.SetMembers(members); err != nil {
				t.Fatal(err)
			}
			user := ownedBy(t, "b", "a", "b")
			conn := newTestConn(1, user)
			if err := a.Attach(conn); err != nil {
				t.Fatal(err)
			}
			locatedAt(t, b, Key{Name: user}, "a")

			relay.set(false)
			a.Closed(conn, "client_gone")
			if err := a.WaitRegistrations(context.Background()); err != nil {
				t.Fatal(err)
			}
			if long {
				// Stand for 30 s of failed rounds, then wait for one more.
				a.retry.mu.Lock()
				a.retry.rounds = slowRounds - 1
				a.retry.mu.Unlock()
				wait.For(t, 10*time.Second, 20*time.Millisecond, func() error {
					a.retry.mu.Lock()
					defer a.retry.mu.Unlock()
					if a.retry.rounds <= slowRounds {
						return fmt.Errorf("%d rounds failed, want more than %d", a.retry.rounds, slowRounds)
					}
					return nil
				})
			}
			relay.set(true)
			locatedAt(t, b, Key{Name: user})
		})
	}
}

// An owner that declared a holder dead dropped its entries; when the holder
// comes back (a healed partition) without having seen itself leave, the
// owner asks it to register again. That question used to go once: a link
// that failed just then left the holder's users missing at the owner, who
// answered "offline" for them until their counts changed.
func TestReturningMemberIsAskedAgainToRegister(t *testing.T) {
	a, aLink := testRouter(t, "a")
	b, bLink := testRouter(t, "b")
	user := ownedBy(t, "a", "a", "b")
	both := func(bAt string) []Member {
		return []Member{{Name: "a", Link: aLink, Inc: "a-1"}, {Name: "b", Link: bAt, Inc: "b-1"}}
	}
	if err := a.SetMembers(both(bLink)); err != nil {
		t.Fatal(err)
	}
	if err := b.SetMembers(both(bLink)); err != nil {
		t.Fatal(err)
	}
	if err := b.Attach(newTestConn(1, user)); err != nil {
		t.Fatal(err)
	}
	locatedAt(t, a, Key{Name: user}, "b")

	// a declares b dead and drops its entries; b never sees it happen.
	if err := a.SetMembers(both(bLink)[:1]); err != nil {
		t.Fatal(err)
	}
	locatedAt(t, a, Key{Name: user})

	// b is back, but the first question to it meets a broken link.
	relay := newRelay(t, bLink)
	a.SetMembers(both(relay.addr()))
	relay.refusedAny(t)
	relay.set(true)
	locatedAt(t, a, Key{Name: user}, "b")
}

// An owner given no partitions by a change holds an entry for every key it
// owns, unless the change before still waited for a member: a new ring
// that came while a's registration with b was on its way made b count
// itself in sync and answer "offline" for a user a held. It waits for a
// again, and hears where the user is once a's retry got through.
func TestOwnerStillWaitingForAMemberWaitsForItAfterTheNextChange(t *testing.T) {
	a, aLink := testRouter(t, "a")
	b, bLink := testRouter(t, "b")
	two := mustRing(t, "a", "b")
	var three *ring.Ring
	third := ""
	for i := 0; third == ""; i++ { // a newcomer whose join gives b nothing
		name := fmt.Sprintf("d%d", i)
		three = mustRing(t, "a", "b", name)
		if !slices.Contains(three.Gainers(two), "b") {
			third = name
		}
	}
	var user string
	for i := 0; user == ""; i++ { // a user b owns in both rings
		if name := fmt.Sprintf("user%d", i); two.Owner(name) == "b" && three.Owner(name) == "b" {
			user = name
		}
	}
	d, dLink := testRouter(t, third)

	if err := a.SetMembers([]Member{{Name: "a", Link: aLink, Inc: "a-1"}}); err != nil {
		t.Fatal(err)
	}
	if err := a.Attach(newTestConn(1, user)); err != nil {
		t.Fatal(err)
	}
	// b joins: a's registration of the user with b cannot get through yet.
	relay := newRelay(t, bLink)
	ab := []Member{{Name: "a", Link: aLink, Inc: "a-1"}, {Name: "b", Link: bLink, Inc: "b-1"}}
	if err := b.SetMembers(ab); err != nil {
		t.Fatal(err)
	}
	viaRelay := slices.Clone(ab)
	viaRelay[1].Link = relay.addr()
	if err := a.SetMembers(viaRelay); err == nil {
		t.Fatal("registering through a link that is down succeeded")
	}
	// The newcomer joins, before a's retry got through.
	withD := func(ms []Member) []Member {
		return append(slices.Clone(ms), Member{Name: third, Link: dLink, Inc: third + "-1"})
	}
	if err := d.SetMembers(withD(ab)); err != nil {
		t.Fatal(err)
	}
	if err := b.SetMembers(withD(ab)); err != nil {
		t.Fatal(err)
	}
	_ = a.SetMembers(withD(viaRelay)) // b is still out of a's reach
	version := b.view.Load().version
	wait.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		if waiting, _ := b.settle.waitingFor(version); !slices.Equal(waiting, []string{"a"}) {
			return fmt.Errorf("b waits for %v, want [a]: the newcomer has reported, a has not", waiting)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if locs, err := b.Locations(ctx, Key{Name: user}); err == nil {
		t.Fatalf("b says %s is at %v while a's registration is on its way; want it not known yet", user, locs)
	}
	relay.set(true)
	locatedAt(t, b, Key{Name: user}, "a")
}

func mustRing(t *testing.T, members ...string) *ring.Ring {
	t.Helper()
	rg, err := ring.New(members)
	if err != nil {
		t.Fatal(err)
	}
	return rg
}
