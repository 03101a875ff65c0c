package node_test

import (
	"fmt"
	"testing"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/node"
	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/store/pgtest"
)

// The owner of a group's name only spares the store repeated reads of its
// members: when it cannot be asked (it crashed, and the others have not
// noticed yet), the sender's node reads them from the store, and members
// connected elsewhere still get the group's events and messages live.
func TestGroupTrafficReachesMembersWhileTheGroupsOwnerIsDown(t *testing.T) {
	url := pgtest.Start(t)
	c := testcluster.Start(t, 3, func(_ int, cfg *node.Config) { cfg.Store = url })
	ctx := ctxFor(t)
	rg, down := c.Nodes[0].Router().Ring(), c.Nodes[2].Name()
	// A group owned by the node that will go down, and users that are not:
	// where they are connected is asked of their own owners.
	var group string
	var users []string
	for i := 0; group == "" || len(users) < 3; i++ {
		if name := fmt.Sprint("g", i); group == "" && rg.Owner(name) == down {
			group = name
		}
		if name := fmt.Sprint("u", i); len(users) < 3 && rg.Owner(name) != down {
			users = append(users, name)
		}
	}
	sender, bob, carol := c.Dial(0, users[0]), c.Dial(1, users[1]), c.Dial(1, users[2])
	if _, err := sender.CreateGroup(ctx, group, users[1]); err != nil {
		t.Fatal(err)
	}
	if m := nextInGroup(t, bob, "bob", group); m.Event != protocol.EventCreated {
		t.Fatalf("bob got %+v, want the created event", m)
	}
	if _, err := sender.SendGroup(ctx, group, "before"); err != nil {
		t.Fatal(err)
	}
	if m := nextInGroup(t, bob, "bob", group); m.Body != "before" {
		t.Fatalf("bob got %+v", m)
	}

	c.Nodes[2].Kill()
	// A new membership version: its members must be read again.
	if ack, err := sender.AddMember(ctx, group, users[2]); err != nil || ack.Seq != 3 {
		t.Fatalf("add while the group's owner is down: %+v %v", ack, err)
	}
	ack, err := sender.SendGroup(ctx, group, "while its owner is down")
	if err != nil || ack.Recipients != 2 {
		t.Fatalf("send while the group's owner is down: %+v %v, want sent to bob and carol", ack, err)
	}
	for _, who := range []struct {
		c    *client.Client
		name string
	}{{bob, "bob"}, {carol, "carol"}} {
		if m := nextInGroup(t, who.c, who.name, group); m.Event != protocol.EventAdded || m.User != users[2] {
			t.Fatalf("%s got %+v, want carol's joining", who.name, m)
		}
		if m := nextInGroup(t, who.c, who.name, group); m.Body != "while its owner is down" {
			t.Fatalf("%s got %+v, want the message sent while the owner is down", who.name, m)
		}
	}
	if n := c.Nodes[0].Router().Ring().Len(); n != 3 {
		t.Fatalf("the ring changed (%d members) before the test was done: it did not run with the owner unreachable", n)
	}
}

// A group message goes once to each other node that holds a member's
// connection: with 20 members connected over 5 nodes (and 20 more who are
// not), 4 node-to-node messages, the member list and the members'
// locations coming from this node's caches once it has sent to the group;
// the owners of the members who are away tell it when one connects. A
// read's receipt takes the same road, with the member list of the
// membership version the store read it at: no node asks the group's owner
// again.
func TestOwnerRoutingSendsAGroupMessageOnceToEachNodeHoldingMembers(t *testing.T) {
	const nodes, users, away = 5, 20, 20
	url := pgtest.Start(t)
	c := testcluster.Start(t, nodes, func(_ int, cfg *node.Config) { cfg.Store = url })
	ctx := ctxFor(t)
	cls := make([]*client.Client, users)
	var names []string
	for i := range cls {
		names = append(names, fmt.Sprintf("user%d", i))
		cls[i] = c.Dial(i%nodes, names[i])
	}
	members := names[1:]
	for i := 0; i < away; i++ {
		members = append(members, fmt.Sprintf("away%d", i))
	}
	if _, err := cls[0].CreateGroup(ctx, "all", members...); err != nil {
		t.Fatal(err)
	}
	var last int64
	var lastFrom int
	send := func(i int) {
		ack, err := cls[i%users].SendGroup(ctx, "all", "hello all")
		if err != nil || ack.Recipients < users-1 {
			t.Fatalf("group send: %+v %v, want sent to the %d others connected", ack, err, users-1)
		}
		last, lastFrom = ack.Seq, i%users
	}
	for i := 0; i < nodes; i++ {
		send(i) // warm each node's member list and location cache
	}
	sent := func(kind ...string) float64 { return c.CounterAll("shard_peer_messages_sent_total", kind...) }
	p0, m0 := sent(), c.CounterAll("shard_chat_messages_total", "kind=group")
	for i := 0; i < 40; i++ {
		send(i)
	}
	perMsg := (sent() - p0) / (c.CounterAll("shard_chat_messages_total", "kind=group") - m0)
	// Everyone reads it all but the last sender, for whom sending was
	// reading: a read that moves nothing has no receipt.
	p0, asks := sent(), sent("kind=members")
	for i, cl := range cls {
		if i == lastFrom {
			continue
		}
		if err := cl.ReadGroup(ctx, "all", last); err != nil {
			t.Fatal(err)
		}
	}
	// Receipts are not acked: wait until every member has all of them.
	for i, cl := range cls {
		want := users - 2
		if i == lastFrom {
			want = users - 1
		}
		for got := 0; got < want; {
			select {
			case r := <-cl.Receipts():
				if r.Group == "all" && r.Seq == last {
					got++
				}
			case <-ctx.Done():
				t.Fatalf("%s got %d of the %d receipts", names[i], got, want)
			}
		}
	}
	perRead := (sent() - p0) / (users - 1)
	t.Logf("%d members on %d nodes: %.3f node-to-node messages per group message, %.3f per read", users, nodes, perMsg, perRead)
	if perMsg > nodes-1+0.05 {
		t.Errorf("%.3f node-to-node messages per group message, want at most %d (one per other node)", perMsg, nodes-1)
	}
	if perRead > nodes-1+0.05 || sent("kind=members") != asks {
		t.Errorf("%.3f node-to-node messages per read, %.0f of them asking for members; want at most %d, none asking",
			perRead, sent("kind=members")-asks, nodes-1)
	}
	// A member who was away connects: the next message reaches it.
	back := c.Dial(3, "away7")
	send(1)
	if m := nextInGroup(t, back, "away7", "all"); m.Seq != last {
		t.Fatalf("a member who came back got %+v, want the message at %d", m, last)
	}
}

// The same unread counts on PostgreSQL, with alice's devices, bob and
// carol on three nodes: the counts, the receipts and the API agree
// whichever node asks.
func TestUnreadCountsAcrossNodesOnPostgres(t *testing.T) {
	url := pgtest.Start(t)
	c := testcluster.Start(t, 3, func(_ int, cfg *node.Config) { cfg.Store, cfg.APIKey = url, "k" })
	unreadAfterMixedTraffic(t, c, [4]int{0, 1, 2, 1})
}
