package router

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardchat/shard/internal/cputime"
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

// answerConn is a test connection that hands its answers to a channel.
type answerConn struct {
	*testConn
	answers chan []byte
}

func (c *answerConn) Answer(f []byte) { c.answers <- f }

// BenchmarkForwardedDirectMessage is a direct message to a user on another
// node, over real links, one at a time: the sender's route and forward, the
// recipient node's serveForward and delivery, the reply and the ack.
// cpu-us/op is what both routers spend on it.
func BenchmarkForwardedDirectMessage(b *testing.B) {
	a, aAddr := testRouter(b, "a")
	r, rAddr := testRouter(b, "b")
	members := []Member{{Name: "a", Link: aAddr, Inc: "a-1"}, {Name: "b", Link: rAddr, Inc: "b-1"}}
	setMembers(b, []*Router{a, r}, members)
	alice := &answerConn{testConn: newTestConn(1, "alice"), answers: make(chan []byte, 1)}
	if err := a.Attach(alice); err != nil {
		b.Fatal(err)
	}
	if err := r.Attach(newTestConn(2, "bob")); err != nil {
		b.Fatal(err)
	}
	f := &protocol.Frame{Type: protocol.TypeSend, ID: "1", To: "bob", Body: "hello there"}
	send := func() []byte {
		a.HandleFrame(alice, f)
		return <-alice.answers
	}
	if ack := send(); !strings.Contains(string(ack), protocol.StatusDelivered) { // and the lookup is cached
		b.Fatalf("the first message was answered %s, want delivered", ack)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := cputime.Self()
	for i := 0; i < b.N; i++ {
		send()
	}
	cputime.Report(b, start)
}

// BenchmarkServeForward is the recipient node's part of a forwarded direct
// message: decode, check, hand to the connection, encode the reply.
func BenchmarkServeForward(b *testing.B) {
	r, addr := testRouter(b, "a")
	if err := r.SetMembers([]Member{{Name: "a", Link: addr, Inc: "a-1"}}); err != nil {
		b.Fatal(err)
	}
	if err := r.Attach(newTestConn(1, "bob")); err != nil {
		b.Fatal(err)
	}
	frame := protocol.AppendMsg(nil, &protocol.Msg{Mid: "m1", From: "alice", To: "bob", Body: "hello there", TS: 1})
	p := appendForward(nil, &delivery{target: Key{Name: "bob"}, from: "alice", frame: frame})
	from := link.Peer{Name: "b", Inc: "b-1"}
	reply := func([]byte) {}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.serveForward(from, p, reply)
	}
}
