package main

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/ring"
)

// presenceLog records every presence event one client is told.
type presenceLog struct {
	who    string
	mu     sync.Mutex
	events []client.Presence
}

func logPresence(who string, cl *client.Client) *presenceLog {
	l := &presenceLog{who: who}
	go func() {
		for p := range cl.Presence() {
			l.mu.Lock()
			l.events = append(l.events, p)
			l.mu.Unlock()
		}
	}()
	return l
}

// await waits until the log holds an event of user saying online, told at
// or after since, and returns the first such.
func (l *presenceLog) await(t *testing.T, user string, online bool, since time.Time, within time.Duration) client.Presence {
	t.Helper()
	var got client.Presence
	wait.For(t, within, 10*time.Millisecond, func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, p := range l.events {
			if p.User == user && p.Online == online && !p.Received.Before(since) {
				got = p
				return nil
			}
		}
		return fmt.Errorf("%s was not told %s is online=%v (told %d events)", l.who, user, online, len(l.events))
	})
	return got
}

// states is what l was told of user, a repeat of the same state left out.
func (l *presenceLog) states(user string) []bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []bool
	for _, p := range l.events {
		if p.User == user && (len(out) == 0 || out[len(out)-1] != p.Online) {
			out = append(out, p.Online)
		}
	}
	return out
}

// since returns the events of user told at or after t.
func (l *presenceLog) since(user string, t time.Time) []client.Presence {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []client.Presence
	for _, p := range l.events {
		if p.User == user && !p.Received.Before(t) {
			out = append(out, p)
		}
	}
	return out
}

// ownerAmong is the node of names that owns user.
func ownerAmong(t *testing.T, user string, names ...string) string {
	rg, err := ring.New(names)
	if err != nil {
		t.Fatal(err)
	}
	return rg.Owner(user)
}

// userOwnedBy is a user name that owner owns on a ring of names.
func userOwnedBy(t *testing.T, prefix, owner string, names ...string) string {
	for i := 0; ; i++ {
		if u := fmt.Sprintf("%s%d", prefix, i); ownerAmong(t, u, names...) == owner {
			return u
		}
	}
}

// leaves closes user's connection cl and waits until every watcher, whose
// events are logs, was told offline; then each watcher makes a round trip,
// so that whatever its node sent before is in its log. It is the tests'
// marker: 3 s at least go by, and the offline comes after any that an
// earlier close at the same owner would have caused.
func leaves(t *testing.T, ctx context.Context, user string, cl *client.Client, logs []*presenceLog, watchers []*client.Client) {
	t.Helper()
	gone := time.Now()
	cl.Close()
	for i, l := range logs {
		l.await(t, user, false, gone, 6*time.Second)
		if err := watchers[i].Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func dialUser(t *testing.T, ctx context.Context, user, url string, fallbacks []string, onState func(client.State)) *client.Client {
	t.Helper()
	cl, err := client.Dial(ctx, client.Options{URL: url, Fallbacks: fallbacks, User: user, Reconnect: true,
		BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond, OnState: onState})
	if err != nil {
		t.Fatalf("dial %s at %s: %v", user, url, err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// TestPresenceAcrossProcesses: carol watches bob from two nodes, bob
// connects on the third. Both of carol's connections are told he is online
// within 1 s; once his connections have all closed, offline within 4 s, with
// a last_seen at or after the close; and when his node drains and he
// reconnects elsewhere within 2 s, nothing.
func TestPresenceAcrossProcesses(t *testing.T) {
	procs := testcluster.StartProcesses(t, 3, "--drain-timeout", "5s")
	names := []string{procs[0].Name, procs[1].Name, procs[2].Name}
	byName := map[string]int{names[0]: 0, names[1]: 1, names[2]: 2}
	url := func(i int) string { return "ws://" + procs[i].HTTP + "/ws" }
	// bob's owner holds one of carol's connections, and keeps owning him
	// when bob's node X drains.
	owner := byName[ownerAmong(t, "bob", names...)]
	x, y := (owner+1)%3, (owner+2)%3
	dave := userOwnedBy(t, "dave", names[owner], names...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var logs []*presenceLog
	var carols []*client.Client
	for _, i := range []int{owner, y} {
		cl := dialUser(t, ctx, "carol", url(i), nil, nil)
		l := logPresence("carol on "+names[i], cl)
		if err := cl.Watch(ctx, "bob", dave); err != nil {
			t.Fatal(err)
		}
		for _, u := range []string{"bob", dave} {
			if p := l.await(t, u, false, time.Time{}, 5*time.Second); p.LastSeen != 0 {
				t.Fatalf("%s: %s, never seen, has last_seen %d", l.who, u, p.LastSeen)
			}
		}
		logs, carols = append(logs, l), append(carols, cl)
	}

	// Watchers may hear of bob before his client has read its welcome: the
	// welcome follows his registration with his owner.
	dialed := time.Now()
	bob := dialUser(t, ctx, "bob", url(x), nil, nil)
	welcomed := time.Now()
	for _, l := range logs {
		if p := l.await(t, "bob", true, dialed, 5*time.Second); p.Received.Sub(welcomed) > time.Second {
			t.Errorf("%s was told bob is online %s after his welcome, want within 1 s", l.who, p.Received.Sub(welcomed))
		}
	}
	bobPhone := dialUser(t, ctx, "bob", url(x), nil, nil)
	closed := time.Now()
	bob.Close()
	bobPhone.Close()
	for _, l := range logs {
		p := l.await(t, "bob", false, closed, 6*time.Second)
		if p.Received.Sub(closed) > 4*time.Second {
			t.Errorf("%s was told bob is offline %s after his connections closed, want within 4 s", l.who, p.Received.Sub(closed))
		}
		if p.LastSeen < closed.UnixMilli() {
			t.Errorf("%s: bob's last_seen %d is before his connections closed (%d)", l.who, p.LastSeen, closed.UnixMilli())
		}
	}

	// bob again, on X, with X's drain ahead: he reconnects elsewhere.
	reconnected := make(chan time.Time, 4)
	var cutAt time.Time
	var stateMu sync.Mutex
	bob = dialUser(t, ctx, "bob", url(x), []string{url(owner), url(y)}, func(s client.State) {
		stateMu.Lock()
		defer stateMu.Unlock()
		switch s.(type) {
		case client.Disconnected:
			cutAt = time.Now()
		case client.Connected:
			if !cutAt.IsZero() {
				reconnected <- time.Now()
			}
		}
	})
	for _, l := range logs {
		l.await(t, "bob", true, closed, 5*time.Second)
	}
	daveCl := dialUser(t, ctx, dave, url(y), nil, nil)
	for _, l := range logs {
		l.await(t, dave, true, time.Time{}, 5*time.Second)
	}
	drained := time.Now()
	procs[x].Signal(syscall.SIGTERM)
	var back time.Time
	select {
	case back = <-reconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("bob did not reconnect after his node drained")
	}
	stateMu.Lock()
	gap := back.Sub(cutAt)
	stateMu.Unlock()
	if gap > 2*time.Second {
		t.Fatalf("bob took %s to reconnect; the test needs it within 2 s", gap)
	}
	if code := procs[x].Wait(10 * time.Second); code != 0 {
		t.Fatalf("%s exited %d after SIGTERM", names[x], code)
	}
	// dave leaves after bob came back, on bob's owner: his offline, 3 s
	// later, comes after any offline of bob's would have.
	leaves(t, ctx, dave, daveCl, logs, carols)
	for _, l := range logs {
		if evs := l.since("bob", drained); len(evs) != 0 {
			t.Errorf("%s was told %+v of bob while he reconnected within %s after a drain, want nothing", l.who, evs, gap)
		}
	}
}

// TestPresenceSurvivesItsOwnerDrainedAndKilled: while carol watches bob
// from two nodes, bob's owner is drained, restarted, then killed with
// SIGKILL; bob stays connected throughout, then leaves and comes back.
// Carol's view is right within 5 s of each change and stays right: her
// connections are told exactly online, offline, online.
func TestPresenceSurvivesItsOwnerDrainedAndKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level membership test")
	}
	nodes := []*clusterNode{
		newClusterNode(t, "n1", "127.0.0.2"),
		newClusterNode(t, "n2", "127.0.0.3"),
		newClusterNode(t, "n3", "127.0.0.4"),
	}
	names := []string{"n1", "n2", "n3"}
	nodes[0].start(t, "")
	nodes[1].start(t, nodes[0].Gossip)
	nodes[2].start(t, nodes[0].Gossip)
	waitRing := func(want int, who ...*clusterNode) {
		t.Helper()
		wait.For(t, 20*time.Second, 50*time.Millisecond, func() error {
			for _, n := range who {
				if got := ringSize(n); got != want {
					return fmt.Errorf("%s routes by a ring of %d, want %d", n.Name, got, want)
				}
			}
			return nil
		})
	}
	waitRing(3, nodes...)
	owner := 0
	for i, n := range names {
		if n == ownerAmong(t, "bob", names...) {
			owner = i
		}
	}
	o, x, y := nodes[owner], nodes[(owner+1)%3], nodes[(owner+2)%3]
	dave := userOwnedBy(t, "dave", o.Name, names...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var logs []*presenceLog
	var carols []*client.Client
	for _, n := range []*clusterNode{x, y} {
		cl := dialUser(t, ctx, "carol", n.url(), nil, nil)
		logs = append(logs, logPresence("carol on "+n.Name, cl))
		carols = append(carols, cl)
	}
	bob := dialUser(t, ctx, "bob", x.url(), nil, nil)
	for i, cl := range carols {
		if err := cl.Watch(ctx, "bob", dave); err != nil {
			t.Fatal(err)
		}
		logs[i].await(t, "bob", true, time.Time{}, 5*time.Second)
	}

	// The owner drains, comes back, and is killed; bob stays.
	o.proc.Signal(syscall.SIGTERM)
	if code := o.proc.Wait(10 * time.Second); code != 0 {
		t.Fatalf("%s exited %d after SIGTERM", o.Name, code)
	}
	waitRing(2, x, y)
	o.start(t, x.Gossip)
	waitRing(3, o, x, y)
	o.proc.Signal(syscall.SIGKILL)
	o.proc.Wait(5 * time.Second)
	waitRing(2, x, y)

	// bob leaves, and comes back.
	closed := time.Now()
	bob.Close()
	for _, l := range logs {
		p := l.await(t, "bob", false, closed, 8*time.Second)
		if p.Received.Sub(closed) > 5*time.Second || p.LastSeen < closed.UnixMilli() {
			t.Errorf("%s was told bob is offline (last seen %d) %s after he left at %d, want within 5 s and last seen after",
				l.who, p.LastSeen, p.Received.Sub(closed), closed.UnixMilli())
		}
	}
	dialed := time.Now()
	dialUser(t, ctx, "bob", y.url(), nil, nil)
	welcomed := time.Now()
	for _, l := range logs {
		if p := l.await(t, "bob", true, dialed, 8*time.Second); p.Received.Sub(welcomed) > 5*time.Second {
			t.Errorf("%s was told bob is back %s after his welcome, want within 5 s", l.who, p.Received.Sub(welcomed))
		}
	}
	// And it stays right: dave comes and goes on bob's new owner, which
	// takes more than 3 s; then each of carol's connections makes a round
	// trip.
	daveCl := dialUser(t, ctx, dave, y.url(), nil, nil)
	for _, l := range logs {
		l.await(t, dave, true, time.Time{}, 5*time.Second)
	}
	leaves(t, ctx, dave, daveCl, logs, carols)
	for _, l := range logs {
		if got := l.states("bob"); fmt.Sprint(got) != "[true false true]" {
			t.Errorf("%s was told bob is online: %v, want [true false true] (connected through the owner's drain, restart and crash, then gone, then back)", l.who, got)
		}
	}
}
