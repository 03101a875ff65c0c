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
