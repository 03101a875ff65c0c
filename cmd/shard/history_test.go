package main

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/store/pgtest"
)

// TestRollingChangesWithPostgresLoseNothingAcked is the rolling-restart
// scenario with every node on one PostgreSQL store: on top of the live
// checks, every message acked `delivered` or `stored` must be in its
// recipient's inbox, whatever the recipient's connection did.
func TestRollingChangesWithPostgresLoseNothingAcked(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level membership test")
	}
	rollingChanges(t, pgtest.Start(t))
}

// syncAll pages through cl's inbox after offset after and returns the
// messages it received, in order.
func syncAll(t *testing.T, ctx context.Context, cl *client.Client, after int64) []client.Msg {
	t.Helper()
	var got []client.Msg
	for {
		ack, err := cl.Sync(ctx, after)
		if err != nil {
			t.Fatalf("sync after %d: %v", after, err)
		}
		// The page's messages were queued before the ack.
		for len(cl.Messages()) > 0 {
			m := <-cl.Messages()
			got = append(got, m)
			after = max(after, m.Seq)
		}
		if !ack.More {
			return got
		}
	}
}

// TestHistoryAcrossNodesWithPostgres runs 3 processes on one PostgreSQL
// store: an offline user syncs everything sent to him, in order, once; a
// room member who reconnects with since misses nothing and sees nothing
// twice; and the node holding a recipient is killed while messages flow to
// him, after which a sync gives him every message acked delivered or stored.
func TestHistoryAcrossNodesWithPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level store test")
	}
	url := pgtest.Start(t)
	var nodes []*clusterNode
	for i, host := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		n := newClusterNode(t, fmt.Sprintf("n%d", i+1), host)
		n.Args = append(n.Args, "--store", url)
		seed := ""
		if i > 0 {
			seed = nodes[0].Gossip
		}
		n.start(t, seed)
		nodes = append(nodes, n)
	}
	wait.For(t, 15*time.Second, 50*time.Millisecond, func() error {
		for _, n := range nodes {
			if got := ringSize(n); got != 3 {
				return fmt.Errorf("%s routes by a ring of %d", n.Name, got)
			}
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dial := func(n *clusterNode, user string, reconnect bool, fallbacks ...*clusterNode) *client.Client {
		t.Helper()
		o := client.Options{URL: n.url(), User: user, Reconnect: reconnect, BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond}
		for _, f := range fallbacks {
			o.Fallbacks = append(o.Fallbacks, f.url())
		}
		cl, err := client.Dial(ctx, o)
		if err != nil {
			t.Fatalf("dial %s on %s: %v", user, n.Name, err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}

	// An offline user gets everything on sync, in order, once.
	alice := dial(nodes[0], "alice", false)
	const offline = 30
	for i := 1; i <= offline; i++ {
		ack, err := alice.Send(ctx, "bob", fmt.Sprintf("while away %d", i))
		if err != nil || ack.Status != protocol.StatusStored {
			t.Fatalf("send %d to offline bob: %+v %v, want stored", i, ack, err)
		}
	}
	bob := dial(nodes[2], "bob", false)
	got := syncAll(t, ctx, bob, 0)
	if len(got) != offline {
		t.Fatalf("bob synced %d messages, want %d", len(got), offline)
	}
	for i, m := range got {
		if m.Seq != int64(i+1) || m.Body != fmt.Sprintf("while away %d", i+1) {
			t.Fatalf("synced message %d: %+v", i, m)
		}
	}
	bob.Close()

	// A room member who reconnects with since misses nothing, twice nothing.
	carol := dial(nodes[0], "carol", false)
	dave := dial(nodes[1], "dave", false)
	for _, cl := range []*client.Client{carol, dave} {
		if err := cl.Join(ctx, "lobby"); err != nil {
			t.Fatal(err)
		}
	}
	var lastSeen int64
	for i := 1; i <= 5; i++ {
		if _, err := carol.SendRoom(ctx, "lobby", fmt.Sprintf("before %d", i)); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-dave.Messages():
			lastSeen = m.Seq
		case <-time.After(5 * time.Second):
			t.Fatal("dave got nothing")
		}
	}
	dave.Close()
	for i := 1; i <= 5; i++ {
		if _, err := carol.SendRoom(ctx, "lobby", fmt.Sprintf("away %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// carol keeps sending while dave rejoins on another node.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; i <= 20; i++ {
			carol.SendRoom(ctx, "lobby", fmt.Sprintf("during %d", i))
		}
	}()
	dave2 := dial(nodes[2], "dave", false)
	if err := dave2.JoinSince(ctx, "lobby", lastSeen); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	seen := map[int64]bool{}
	want := lastSeen + 5 + 20
	for next := lastSeen + 1; next <= want; next++ {
		select {
		case m := <-dave2.Messages():
			if seen[m.Seq] {
				t.Fatalf("dave saw offset %d twice", m.Seq)
			}
			if m.Seq != next {
				t.Fatalf("dave got offset %d, want %d: a gap or a reordering at the hand-over", m.Seq, next)
			}
			seen[m.Seq] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("dave stopped at offset %d of %d", next-1, want)
		}
	}

	// The node holding erin dies while messages flow to her: after she
	// reconnects and syncs, she has every message acked delivered or stored.
	erin := dial(nodes[1], "erin", true, nodes[0], nodes[2])
	frank := dial(nodes[0], "frank", false)
	type sent struct {
		body   string
		status string
	}
	var mu sync.Mutex
	var acked []sent
	stop := make(chan struct{})
	flowDone := make(chan struct{})
	go func() {
		defer close(flowDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			body := fmt.Sprintf("flow %d", i)
			ack, err := frank.Send(ctx, "erin", body)
			if err == nil {
				mu.Lock()
				acked = append(acked, sent{body, ack.Status})
				mu.Unlock()
			}
		}
	}()
	wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acked) < 50 {
			return fmt.Errorf("%d messages acked so far", len(acked))
		}
		return nil
	})
	nodes[1].proc.Signal(syscall.SIGKILL)
	wait.For(t, 15*time.Second, 50*time.Millisecond, func() error {
		if w := erin.Welcome(); w.Node == "n2" {
			return fmt.Errorf("erin is still on the dead node")
		}
		return nil
	})
	wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if n := len(acked); n < 100 {
			return fmt.Errorf("%d messages acked so far", n)
		}
		return nil
	})
	close(stop)
	<-flowDone
	inbox := map[string]bool{}
	for len(erin.Messages()) > 0 { // live deliveries so far
		inbox[(<-erin.Messages()).Body] = true
	}
	for _, m := range syncAll(t, ctx, erin, 0) {
		inbox[m.Body] = true
	}
	mu.Lock()
	defer mu.Unlock()
	missing := 0
	for _, s := range acked {
		if (s.status == protocol.StatusDelivered || s.status == protocol.StatusStored) && !inbox[s.body] {
			missing++
			t.Errorf("%q was acked %s but erin does not have it after syncing", s.body, s.status)
		}
	}
	t.Logf("%d messages acked to frank while erin's node died; %d missing after her sync", len(acked), missing)
}
