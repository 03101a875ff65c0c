package router

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/ring"
	"github.com/shardchat/shard/session"
)

func testRouter(t *testing.T, name string) (*Router, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := New(Config{Self: name, Incarnation: name + "-1", RequestTimeout: time.Second,
		Metrics: NewMetrics(prometheus.NewRegistry())}, ln)
	t.Cleanup(r.Close)
	return r, ln.Addr().String()
}

// relay forwards connections on its address to target while up; while
// down it drops them at once, as a link that keeps breaking would.
type relay struct {
	ln     net.Listener
	target string
	up     atomic.Bool
}

func newRelay(t *testing.T, target string) *relay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &relay{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !p.up.Load() {
				c.Close()
				continue
			}
			go func() {
				u, err := net.Dial("tcp", p.target)
				if err != nil {
					c.Close()
					return
				}
				go func() { io.Copy(u, c); u.Close() }()
				io.Copy(c, u)
				c.Close()
			}()
		}
	}()
	return p
}

// A holder whose registration with a key's new owner failed (the link was
// down for a moment) used to tell that owner it was in sync all the same,
// and never registered again: the owner answered "offline" for a user who
// was connected, until the next ring change.
func TestRegistrationThatFailedIsRetriedBeforeTheOwnerCountsIt(t *testing.T) {
	a, aLink := testRouter(t, "a")
	b, bLink := testRouter(t, "b")
	two, err := ring.New([]string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	user := ""
	for i := 0; user == ""; i++ {
		if name := fmt.Sprintf("user%d", i); two.Owner(name) == "b" {
			user = name
		}
	}

	// a holds the user's connection while it is alone.
	if err := a.SetMembers([]Member{{Name: "a", Link: aLink, Inc: "a-1"}}); err != nil {
		t.Fatal(err)
	}
	if err := a.Attach(session.New(1, user, session.Config{})); err != nil {
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
	if err := a.SetMembers(members(relay.ln.Addr().String())); err == nil {
		t.Fatal("registering through a link that is down succeeded")
	}
	relay.up.Store(true)

	wait.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		locs, err := b.Locations(ctx, Key{Name: user})
		if err != nil {
			return err
		}
		if len(locs) != 1 || locs[0].Node != "a" {
			return fmt.Errorf("owner b says %s is at %v, want node a", user, locs)
		}
		return nil
	})
}
