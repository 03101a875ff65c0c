package node_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/node"
	"github.com/shardchat/shard/protocol"
)

func TestSlowConsumerIsCutWithoutHoldingUpOthers(t *testing.T) {
	c := testcluster.Start(t, 2, func(_ int, cfg *node.Config) {
		cfg.Session.SendQueue = 32
		cfg.Session.Rate = 100000
	})
	// The slow reader joins, then never reads again.
	slow := dialRaw(t, c, 1, "sloth")
	slow.write(websocket.TextMessage, `{"type":"join","id":"j","room":"firehose"}`)
	if f := slow.read(); f["status"] != protocol.StatusOK {
		t.Fatalf("join: %v", f)
	}
	reader := c.Dial(1, "reader")
	ctx := ctxFor(t)
	if err := reader.Join(ctx, "firehose"); err != nil {
		t.Fatal(err)
	}
	sender := c.Dial(0, "sender")
	if err := sender.Join(ctx, "firehose"); err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("x", 16000) // 24 MB in all: more than the socket buffers hold
	const n = 1500
	// Each message has 5 s to reach the reading member; all of them
	// together get a minute, for a machine busy with other tests.
	sendCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < n; i++ {
		if _, err := sender.SendRoom(sendCtx, "firehose", body); err != nil {
			t.Fatal(err)
		}
		select {
		case <-reader.Messages():
		case <-time.After(5 * time.Second):
			t.Fatalf("the reading member stalled at message %d", i)
		}
	}
	wait.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		if got := c.Counter(1, "shard_connections_closed_total", "reason=slow_consumer"); got != 1 {
			return fmt.Errorf("%v slow consumers cut, want 1", got)
		}
		return nil
	})
	// What the slow client finally reads ends in a close, not in silence.
	slow.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var err error
	for err == nil {
		_, _, err = slow.ws.ReadMessage()
	}
	var ce *websocket.CloseError
	if errors.As(err, &ce) && ce.Code != websocket.ClosePolicyViolation && ce.Code != websocket.CloseAbnormalClosure {
		t.Fatalf("slow consumer closed with %d, want 1008", ce.Code)
	}
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the slow consumer's connection was never closed")
	}
}

func TestSilentConnectionIsClosedAfterTwoPingIntervals(t *testing.T) {
	c := testcluster.Start(t, 1, func(_ int, cfg *node.Config) { cfg.Session.PingInterval = 100 * time.Millisecond })
	// gorilla answers pings only while reading: this client never reads.
	silent, resp, err := websocket.DefaultDialer.Dial(c.URL(0)+"?user=ghost", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	defer silent.Close()
	// A client that reads answers the pings and stays.
	alive := c.Dial(0, "awake")
	wait.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		if got := c.Counter(0, "shard_connections_closed_total", "reason=ping_timeout"); got != 1 {
			return fmt.Errorf("%v connections closed for silence, want 1", got)
		}
		return nil
	})
	// Both connected together, so the reading client has lived through the
	// same two intervals; its ping still works.
	if err := alive.Ping(ctxFor(t)); err != nil {
		t.Fatalf("a client that answers pings was cut: %v", err)
	}
}

// A recipient that stops reading until its socket is full gets, once it
// reads again, every message whole and in order: frames written at once by
// the sending goroutine, the tail of one the socket could not take, and the
// frames queued behind it.
func TestLateReaderGetsEveryLargeMessageWholeAndInOrder(t *testing.T) {
	c := testcluster.Start(t, 2, func(_ int, cfg *node.Config) { cfg.Session.Rate = 100000 })
	bob := dialRaw(t, c, 1, "bob")
	for _, from := range []int{0, 1} { // through a link, and from bob's own node
		alice := dialRaw(t, c, from, fmt.Sprintf("alice%d", from))
		const n = 300 // 300 x 32 KiB: more than loopback's socket buffers hold
		filler := strings.Repeat("x", 32<<10)
		for i := 0; i < n; i++ {
			alice.write(websocket.TextMessage, fmt.Sprintf(`{"type":"send","id":"%d","to":"bob","body":"%d %s"}`, i, i, filler))
		}
		for i := 0; i < n; i++ {
			if a := alice.read(); a["status"] != protocol.StatusDelivered {
				t.Fatalf("send %d answered %v, want delivered", i, a)
			}
		}
		for i := 0; i < n; i++ {
			m := bob.read()
			want := fmt.Sprintf("%d %s", i, filler)
			if body, _ := m["body"].(string); body != want {
				t.Fatalf("message %d from node %d arrived as %.20q (%d bytes), want number %d whole", i, from, body, len(body), i)
			}
		}
	}
}
