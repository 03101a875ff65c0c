package node_test

import (
	"fmt"
	"testing"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/node"
	"github.com/shardchat/shard/router"
)

// peerMessagesPerChatMessage runs a steady workload on a 5-node cluster:
// users spread over all nodes, each sending direct messages to users on
// other nodes (after one warm-up round, as a long-running cluster would
// be), and room messages to a room with members on every node. It returns
// node-to-node messages per direct and per room message, counted from the
// counters of docs/protocol.md §9 on all nodes.
func peerMessagesPerChatMessage(t *testing.T, mode router.Mode) (direct, room float64) {
	const nodes, users = 5, 20
	c := testcluster.Start(t, nodes, func(_ int, cfg *node.Config) { cfg.Routing = mode })
	// Each request gets its own 10 s (ctxFor): the 300 of them in sequence
	// took longer than one 10 s on a loaded machine.
	cls := make([]*client.Client, users)
	for i := range cls {
		cls[i] = c.Dial(i%nodes, fmt.Sprintf("user%d", i))
		if err := cls[i].Join(ctxFor(t), "townhall"); err != nil {
			t.Fatal(err)
		}
	}
	round := func() {
		for i, cl := range cls {
			to := fmt.Sprintf("user%d", (i+1)%users) // on the next node
			if _, err := cl.Send(ctxFor(t), to, "hello"); err != nil {
				t.Fatal(err)
			}
			recvMsg(t, cls[(i+1)%users], to)
		}
	}
	round() // warm the location caches
	// What the messages cost, not what the cluster's start still costs: an
	// owner that waited for a member's report at the start asks it again
	// (resync, its registrations, synced), which may fall within the rounds.
	// Counted by the kinds a chat message sends, one at a time: the total
	// less the others would race with what the start still sends.
	sent := func() float64 {
		total := 0.0
		for _, kind := range []string{"forward", "lookup", "lookup_users", "members", "invalidate"} {
			total += c.CounterAll("shard_peer_messages_sent_total", "kind="+kind)
		}
		return total
	}
	chats := func(kind string) float64 { return c.CounterAll("shard_chat_messages_total", "kind="+kind) }

	p0, d0 := sent(), chats("direct")
	for r := 0; r < 10; r++ {
		round()
	}
	direct = (sent() - p0) / (chats("direct") - d0)

	roomSend := func(i int) {
		ack, err := cls[i%users].SendRoom(ctxFor(t), "townhall", "all hands")
		if err != nil {
			t.Fatal(err)
		}
		if ack.Recipients != users-1 {
			t.Fatalf("room ack counts %d recipients, want %d", ack.Recipients, users-1)
		}
	}
	for i := 0; i < nodes; i++ {
		roomSend(i) // warm the location caches
	}
	p0, r0 := sent(), chats("room")
	for i := 0; i < 40; i++ {
		roomSend(i)
	}
	room = (sent() - p0) / (chats("room") - r0)
	t.Logf("%s routing, %d nodes: %.3f node-to-node messages per direct message, %.3f per room message", mode, nodes, direct, room)
	return direct, room
}

func TestOwnerRoutingSendsOneNodeMessagePerDirectMessage(t *testing.T) {
	direct, room := peerMessagesPerChatMessage(t, router.Owner)
	if direct > 1.1 {
		t.Fatalf("owner routing: %.3f node-to-node messages per direct message, want at most 1.1", direct)
	}
	// A room with members on all 5 nodes needs one message to each other node.
	if room > 4.1 {
		t.Fatalf("owner routing: %.3f node-to-node messages per room message, want at most 4.1", room)
	}
}

func TestBroadcastRoutingSendsToEveryOtherNode(t *testing.T) {
	direct, _ := peerMessagesPerChatMessage(t, router.Broadcast)
	if direct != 4 {
		t.Fatalf("broadcast routing: %.3f node-to-node messages per direct message, want N-1 = 4", direct)
	}
}
