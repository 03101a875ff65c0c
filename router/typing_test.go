package router

import (
	"context"
	"testing"

	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/store"
)

// Typing in a group goes by the member list its node keeps, as the group's
// messages and receipts do: a page sends a typing frame at every keystroke,
// and each asked the group's owner for the members (and the owner read the
// whole list from the store), the ones dropped by the 2 s throttle too.
func TestTypingInAGroupAsksForItsMembersOnce(t *testing.T) {
	routers, net := memClusterWith(t, 2, embeddedStore(t))
	team := ownedBy(t, "r0", "r0", "r1")
	if _, err := routers[0].ChangeGroup(context.Background(), store.EventCreated,
		store.GroupChange{Group: team, By: "alice", Members: []string{"bob"}}); err != nil {
		t.Fatal(err)
	}
	alice := attach(t, routers[1], "alice")
	before := net.sent(kindMembers)
	const keystrokes = 10
	for range keystrokes {
		routers[1].HandleFrame(alice, &protocol.Frame{Type: protocol.TypeTyping, ID: "t", Group: team})
	}
	alice.mu.Lock()
	answers := alice.answers
	alice.mu.Unlock()
	if len(answers) != keystrokes {
		t.Fatalf("%d typing frames got %d answers", keystrokes, len(answers))
	}
	for i, a := range answers {
		if string(a) != `{"type":"ack","id":"t","status":"ok"}` {
			t.Fatalf("typing %d answered %s, want ok", i, a)
		}
	}
	if asked := net.sent(kindMembers) - before; asked != 1 {
		t.Fatalf("%d typing frames to a group asked its owner for the members %d times, want once", keystrokes, asked)
	}
}

// Typing in a room reaches a connection that is joining it with a replay:
// it is no message of the room's stream, which the replay hands over to
// live delivery in offset order. Held with the live messages, it counted
// against the connection's queue and was dropped at the end of the replay,
// having no offset above it.
func TestTypingInARoomReachesAConnectionWhileItsJoinReplays(t *testing.T) {
	c := &watcherConn{testConn: testConn{id: 1, user: "bob"}}
	cl := &client{Conn: c}
	cl.beginReplay("lobby")
	typing := protocol.AppendTyping(nil, &protocol.Typing{From: "alice", Room: "lobby"})
	if !cl.sendRoom("lobby", 0, typing) {
		t.Fatal("typing refused during a replay")
	}
	cl.endReplay("lobby", 7)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.frames) != 1 || string(c.frames[0]) != string(typing) {
		t.Fatalf("bob was handed %q while his join replayed, want alice's typing", c.frames)
	}
}
