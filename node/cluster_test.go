package node_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/node"
	"github.com/shardchat/shard/protocol"
)

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// recvMsg waits for the next message on cl.
func recvMsg(t *testing.T, cl *client.Client, who string) client.Msg {
	t.Helper()
	return next(t, cl.Messages(), who, 5*time.Second)
}

// noMsg checks that no message is waiting on cl (see none).
func noMsg(t *testing.T, cl *client.Client, who string) {
	t.Helper()
	none(t, cl.Messages(), who)
}

func sendOK(t *testing.T, from *client.Client, to, body, wantStatus string) {
	t.Helper()
	ack, err := from.Send(ctxFor(t), to, body)
	if err != nil {
		t.Fatalf("send to %s: %v", to, err)
	}
	if ack.Status != wantStatus {
		t.Fatalf("send to %s acked %q, want %q", to, ack.Status, wantStatus)
	}
}

func forSizes(t *testing.T, f func(t *testing.T, c *testcluster.Cluster)) {
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprintf("nodes=%d", n), func(t *testing.T) {
			f(t, testcluster.Start(t, n, nil))
		})
	}
}

func TestDirectMessageReachesRecipientOnAnotherNode(t *testing.T) {
	forSizes(t, func(t *testing.T, c *testcluster.Cluster) {
		last := len(c.Nodes) - 1
		alice := c.Dial(0, "alice")
		bob := c.Dial(last, "bob")
		if alice.Welcome().Node == bob.Welcome().Node {
			t.Fatalf("alice and bob are both on %s", alice.Welcome().Node)
		}
		sendOK(t, alice, "bob", "hi bob", protocol.StatusDelivered)
		m := recvMsg(t, bob, "bob")
		if m.From != "alice" || m.To != "bob" || m.Body != "hi bob" || m.Mid == "" {
			t.Fatalf("bob got %+v", m)
		}
		if age := time.Since(time.UnixMilli(m.TS)); age < 0 || age > 10*time.Second {
			t.Fatalf("ts %d is not a time of the last seconds", m.TS)
		}
		sendOK(t, bob, "alice", "hi alice", protocol.StatusDelivered)
		if m := recvMsg(t, alice, "alice"); m.Body != "hi alice" || m.From != "bob" {
			t.Fatalf("alice got %+v", m)
		}
	})
}

func TestDirectMessageToUserWithNoConnectionIsOffline(t *testing.T) {
	forSizes(t, func(t *testing.T, c *testcluster.Cluster) {
		alice := c.Dial(0, "alice")
		if alice.Welcome().Store {
			t.Fatal("the welcome of a node without a store says it keeps messages")
		}
		sendOK(t, alice, "bob", "anyone?", protocol.StatusOffline)
		// bob connects, then leaves again: offline again once he is gone.
		bob := c.Dial(1, "bob")
		sendOK(t, alice, "bob", "now?", protocol.StatusDelivered)
		recvMsg(t, bob, "bob")
		bob.Close()
		wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
			ack, err := alice.Send(ctxFor(t), "bob", "gone?")
			if err != nil {
				return err
			}
			if ack.Status != protocol.StatusOffline {
				return fmt.Errorf("send to bob after he closed acked %q, want offline", ack.Status)
			}
			return nil
		})
	})
}

// Sends to users who never connected leave at most one directory entry
// and one cached answer per name, bounded at each owner (router: at most
// 65,536 keys no node holds are watched; past that an empty answer is not
// cached), and expiring with their watch; a sender asks an owner once about
// a user who stays offline, not once per message; and a user who then
// connects is found by the next send at once.
func TestSendsToUnknownUsersLeaveABoundedTraceAndAreAskedOnce(t *testing.T) {
	c := testcluster.Start(t, 2, nil)
	alice := c.Dial(0, "alice")
	sendOK(t, alice, "alice", "warm-up", protocol.StatusOffline)
	keys := func() (dir, cached float64) {
		return c.CounterAll("shard_directory_keys"), c.Counter(0, "shard_location_cache_keys")
	}
	dir0, cached0 := keys()
	const n = 300 // within the rate limit's burst
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < n; i++ {
		if ack, err := alice.Send(ctx, fmt.Sprintf("ghost%d", i), "anyone?"); err != nil || ack.Status != protocol.StatusOffline {
			t.Fatalf("send %d to a user who never connected: %+v %v, want offline", i, ack, err)
		}
	}
	dir1, cached1 := keys()
	t.Logf("%d sends to unknown users: %v directory entries and %v cached answers more", n, dir1-dir0, cached1-cached0)
	if dir1-dir0 > n || cached1-cached0 > n {
		t.Errorf("%d sends to %d unknown users left %v directory entries at their owners and %v cached answers at the sender, want at most one each per user",
			n, n, dir1-dir0, cached1-cached0)
	}
	// Someone who stays offline, owned by the other node: asked about once.
	rg := c.Nodes[0].Router().Ring()
	away := ""
	for i := 0; away == ""; i++ {
		if name := fmt.Sprintf("away%d", i); rg.Owner(name) == c.Nodes[1].Name() {
			away = name
		}
	}
	lookups0 := c.Counter(0, "shard_peer_messages_sent_total", "kind=lookup")
	for i := 0; i < 50; i++ {
		sendOK(t, alice, away, "are you there?", protocol.StatusOffline)
	}
	if got := c.Counter(0, "shard_peer_messages_sent_total", "kind=lookup") - lookups0; got != 1 {
		t.Errorf("50 sends to %s, offline, asked its owner %v times, want once", away, got)
	}
	// One ghost of each owner connects; the next send finds it at once.
	found := map[string]bool{}
	for i := 0; i < n && len(found) < 2; i++ {
		name := fmt.Sprintf("ghost%d", i)
		owner := rg.Owner(name)
		if found[owner] {
			continue
		}
		found[owner] = true
		ghost := c.Dial(1, name)
		sendOK(t, alice, name, "there you are", protocol.StatusDelivered)
		recvMsg(t, ghost, name)
	}
}

func TestDirectMessageReachesEveryDeviceAndCopiesTheSender(t *testing.T) {
	forSizes(t, func(t *testing.T, c *testcluster.Cluster) {
		alice := c.Dial(0, "alice")
		alicePhone := c.Dial(2, "alice")
		bobLaptop := c.Dial(1, "bob")
		bobPhone := c.Dial(2, "bob")
		sendOK(t, alice, "bob", "to all of bob", protocol.StatusDelivered)
		for _, dev := range []struct {
			cl   *client.Client
			name string
		}{{bobLaptop, "bob's laptop"}, {bobPhone, "bob's phone"}, {alicePhone, "alice's phone"}} {
			m := recvMsg(t, dev.cl, dev.name)
			if m.Body != "to all of bob" || m.From != "alice" || m.To != "bob" {
				t.Fatalf("%s got %+v", dev.name, m)
			}
		}
		// The sending connection gets no copy: a ping round trip on it
		// proves nothing was queued before the pong.
		if err := alice.Ping(ctxFor(t)); err != nil {
			t.Fatal(err)
		}
		noMsg(t, alice, "the sending connection")
		noMsg(t, bobLaptop, "bob's laptop (a second time)")
	})
}

func TestRoomMessageReachesEachJoinedConnectionOnce(t *testing.T) {
	forSizes(t, func(t *testing.T, c *testcluster.Cluster) {
		ctx := ctxFor(t)
		sender := c.Dial(0, "carol")
		members := []*client.Client{
			c.Dial(0, "dave"), c.Dial(1, "erin"), c.Dial(1, "frank"), c.Dial(2, "grace"), c.Dial(2, "carol"),
		}
		outsider := c.Dial(1, "heidi")
		for _, cl := range append([]*client.Client{sender}, members...) {
			if err := cl.Join(ctx, "lobby"); err != nil {
				t.Fatalf("join: %v", err)
			}
		}
		for round := 0; round < 3; round++ {
			body := fmt.Sprintf("round %d", round)
			ack, err := sender.SendRoom(ctx, "lobby", body)
			if err != nil {
				t.Fatal(err)
			}
			if ack.Status != protocol.StatusSent || ack.Recipients != len(members) {
				t.Fatalf("room ack %+v, want sent to %d", ack, len(members))
			}
			for i, m := range members {
				got := recvMsg(t, m, fmt.Sprintf("member %d", i))
				if got.Room != "lobby" || got.Body != body || got.From != "carol" {
					t.Fatalf("member %d got %+v", i, got)
				}
			}
		}
		for i, m := range members {
			if err := m.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			noMsg(t, m, fmt.Sprintf("member %d (duplicate)", i))
		}
		if err := sender.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		noMsg(t, sender, "the sending connection")
		noMsg(t, outsider, "a user who never joined")
	})
}

func TestRoomSendWithoutJoiningIsNotMember(t *testing.T) {
	c := testcluster.Start(t, 3, nil)
	ctx := ctxFor(t)
	member := c.Dial(1, "erin")
	if err := member.Join(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}
	stranger := c.Dial(0, "mallory")
	_, err := stranger.SendRoom(ctx, "lobby", "let me in")
	var e *client.Error
	if !errors.As(err, &e) || e.Code != protocol.CodeNotMember {
		t.Fatalf("send to an unjoined room: %v, want not_member", err)
	}
	// Membership belongs to the connection: another device of erin's is
	// not a member either.
	erinPhone := c.Dial(2, "erin")
	if _, err := erinPhone.SendRoom(ctx, "lobby", "me too"); !errors.As(err, &e) || e.Code != protocol.CodeNotMember {
		t.Fatalf("send from erin's unjoined phone: %v, want not_member", err)
	}
	noMsg(t, member, "the member")
}

func TestLeaveStopsRoomMessages(t *testing.T) {
	c := testcluster.Start(t, 3, nil)
	ctx := ctxFor(t)
	sender := c.Dial(0, "carol")
	stays := c.Dial(1, "dave")
	leaves := c.Dial(2, "erin")
	for _, cl := range []*client.Client{sender, stays, leaves} {
		if err := cl.Join(ctx, "lobby"); err != nil {
			t.Fatal(err)
		}
	}
	if err := leaves.Leave(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}
	ack, err := sender.SendRoom(ctx, "lobby", "after the leave")
	if err != nil {
		t.Fatal(err)
	}
	if ack.Recipients != 1 {
		t.Fatalf("room ack counts %d recipients, want 1", ack.Recipients)
	}
	recvMsg(t, stays, "dave")
	if err := leaves.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	noMsg(t, leaves, "erin after she left")
	// A member that left cannot send to the room either.
	var e *client.Error
	if _, err := leaves.SendRoom(ctx, "lobby", "hello?"); !errors.As(err, &e) || e.Code != protocol.CodeNotMember {
		t.Fatalf("send after leave: %v, want not_member", err)
	}
	// Closing a connection ends its membership.
	stays.Close()
	wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		ack, err := sender.SendRoom(ctx, "lobby", "anyone left?")
		if err != nil {
			return err
		}
		if ack.Recipients != 0 {
			return fmt.Errorf("room ack counts %d recipients after the last member closed, want 0", ack.Recipients)
		}
		return nil
	})
}

func TestThousandMessagesArriveInOrder(t *testing.T) {
	c := testcluster.Start(t, 3, func(_ int, cfg *node.Config) { cfg.Session.Rate = 100000 })
	alice := c.Dial(0, "alice")
	bob := c.Dial(2, "bob")
	const n = 1000
	acks := make(chan error, n)
	for i := 0; i < n; i++ {
		f := client.Frame{Type: "send", To: "bob", Body: fmt.Sprintf("%d", i)}
		err := alice.SendAsync(f, func(a client.Ack, err error) {
			if err == nil && a.Status != protocol.StatusDelivered {
				err = fmt.Errorf("ack %q", a.Status)
			}
			acks <- err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		m := recvMsg(t, bob, "bob")
		if m.Body != fmt.Sprint(i) {
			t.Fatalf("message %d arrived as number %s: out of order", i, m.Body)
		}
	}
	for i := 0; i < n; i++ {
		select {
		case err := <-acks:
			if err != nil {
				t.Fatalf("a send was not delivered: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of %d sends were answered", i, n)
		}
	}
}
