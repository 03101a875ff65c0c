package router

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardchat/shard/link"
	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/store"
)

// A room message that was stored stays in the room's stream even when the
// room's owner cannot be asked who is in the room: its sender must hear
// `sent` with the connections it reached (none), not `unavailable`, which
// says "not kept, send again" and made a client store it twice.
func TestStoredRoomMessageIsSentWhenTheRoomsOwnerCannotBeAsked(t *testing.T) {
	st, err := store.Open(context.Background(), t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	links := link.New(link.Config{Self: "a", Inc: "a-1", RequestTimeout: time.Second}, ln)
	a := New(Config{Self: "a", Incarnation: "a-1", Store: st, Metrics: NewMetrics(prometheus.NewRegistry())}, links)
	t.Cleanup(a.Close)
	gone, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	goneAt := gone.Addr().String()
	gone.Close() // b is in the ring, but nothing answers at its link
	room := ownedBy(t, "b", "a", "b")
	if err := a.SetMembers([]Member{{Name: "a", Link: ln.Addr().String(), Inc: "a-1"}, {Name: "b", Link: goneAt, Inc: "b-1"}}); err != nil {
		t.Logf("ring install: %v", err) // b cannot be told a is in sync
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pub, err := a.Publish(ctx, "system", "", room, "", "kept")
	if err != nil || pub.Status != protocol.StatusSent || pub.Recipients != 0 || pub.Seq != 1 {
		t.Fatalf("a stored room message whose owner is unreachable was answered %+v, err %v; want sent to 0 at seq 1", pub, err)
	}
	msgs, _, _, err := st.Read(ctx, store.RoomStream(room), 0, 10)
	if err != nil || len(msgs) != 1 || msgs[0].Body != "kept" {
		t.Fatalf("the room's stream holds %v (%v), want the one message", msgs, err)
	}
}
