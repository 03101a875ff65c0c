package fakepeers_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/fakepeers"
	"github.com/shardchat/shard/internal/shardproc"
	"github.com/shardchat/shard/protocol"
)

// binDir holds cmd/shard, built by the first test that needs it; TestMain
// removes it.
var (
	binOnce sync.Once
	binDir  string
	bin     string
	binErr  error
)

func nodeBin(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "fakepeers-test-"); binErr == nil {
			bin, binErr = shardproc.Build(context.Background(), binDir)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

const (
	peers        = 7 // a cluster of 8
	usersPerNode = 4
	timeout      = 20 * time.Second
)

// startView starts a real node and 7 synthetic peers around it, and the
// node's own users as real clients.
func startView(t *testing.T, routing string) (*fakepeers.Cluster, map[int]*client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	addrs, err := shardproc.FreeAddrs(shardproc.Loopback(0))
	if err != nil {
		t.Fatal(err)
	}
	node, err := shardproc.Start(shardproc.Spec{Name: "n1", Addrs: addrs, Bin: nodeBin(t),
		Args: []string{"--routing", routing, "--log-level", "warn"}, Log: filepath.Join(t.TempDir(), "n1.log")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shardproc.Stop(10*time.Second, node) })
	if err := shardproc.WaitReady(ctx, timeout, node); err != nil {
		t.Fatal(err)
	}
	c, err := fakepeers.Start(ctx, fakepeers.Config{Peers: peers, Node: "n1", NodeGossip: addrs.Gossip,
		UsersPerNode: usersPerNode, Broadcast: routing == "broadcast"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := shardproc.WaitRing(ctx, timeout, peers+1, node); err != nil {
		t.Fatal(err)
	}
	if err := c.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	clients := make(map[int]*client.Client)
	for _, u := range c.NodeUsers() {
		cl, err := client.Dial(ctx, client.Options{URL: "ws://" + addrs.HTTP + "/ws", User: fakepeers.User(u)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		clients[u] = cl
	}
	return c, clients
}

// receive waits for want messages on cl and returns their senders, counted.
func receive(t *testing.T, cl *client.Client, want int) map[string]int {
	t.Helper()
	from := make(map[string]int)
	deadline := time.After(timeout)
	for n := 0; n < want; n++ {
		select {
		case m := <-cl.Messages():
			from[m.From]++
		case <-deadline:
			t.Fatalf("got %d of %d messages: %v", n, want, from)
		}
	}
	return from
}

// sendToAll has every client of the real node send one message to every
// other user of the cluster, and checks that each is answered delivered.
func sendToAll(t *testing.T, c *fakepeers.Cluster, clients map[int]*client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for u, cl := range clients {
		for to := 0; to < c.Users(); to++ {
			if to == u {
				continue
			}
			ack, err := cl.Send(ctx, fakepeers.User(to), "hi")
			if err != nil || ack.Status != protocol.StatusDelivered {
				t.Fatalf("%s to %s: %+v, %v; want delivered", fakepeers.User(u), fakepeers.User(to), ack, err)
			}
		}
	}
}

// synthesize has one user of every peer send to every user of the real
// node, as the peers' routers would, and checks every answer.
func synthesize(t *testing.T, c *fakepeers.Cluster) {
	t.Helper()
	results := make(chan bool, c.Users())
	sent := 0
	for from := 1; from <= peers; from++ {
		for _, to := range c.NodeUsers() {
			if c.Send(from, to, "from a peer", func(ok bool) { results <- ok }) {
				sent++
			}
		}
	}
	if want := peers * len(c.NodeUsers()); sent != want {
		t.Fatalf("%d sends reached the real node, want all %d (each recipient lives there)", sent, want)
	}
	for range sent {
		select {
		case ok := <-results:
			if !ok {
				t.Fatal("the real node answered a peer's request wrongly")
			}
		case <-time.After(timeout):
			t.Fatal("the real node did not answer a peer's request")
		}
	}
}

// TestOneNodesViewUnderOwnerRouting drives a real node among 7 synthetic
// peers: its clients' sends are answered, every message reaches its
// recipient on the real node, and each message to a user on a peer goes to
// that peer alone, once.
func TestOneNodesViewUnderOwnerRouting(t *testing.T) {
	c, clients := startView(t, "owner")
	sendToAll(t, c, clients)
	synthesize(t, c)
	for u, cl := range clients {
		from := receive(t, cl, len(clients)-1+peers)
		for v := range clients {
			if v != u && from[fakepeers.User(v)] != 1 {
				t.Errorf("%s got %d messages from %s on the same node, want 1", fakepeers.User(u), from[fakepeers.User(v)], fakepeers.User(v))
			}
		}
		for p := 1; p <= peers; p++ {
			if from[fakepeers.User(p)] != 1 {
				t.Errorf("%s got %d messages from %s on peer p%d, want 1", fakepeers.User(u), from[fakepeers.User(p)], fakepeers.User(p), p)
			}
		}
	}
	got, strays := c.ForwardsIn()
	for i := range got {
		// Each client sent one message to each of the usersPerNode users
		// of every peer.
		if want := int64(len(clients) * usersPerNode); got[i] != want || strays[i] != 0 {
			t.Errorf("peer p%d got %d forwards (%d for users elsewhere), want %d, all for its users", i+1, got[i], strays[i], want)
		}
	}
	if f := c.Stats().Failed.Load(); f != 0 {
		t.Errorf("%d of the peers' requests failed or were answered wrongly", f)
	}
}

// TestOneNodesViewUnderBroadcastRouting: the same sends, but every message
// goes to every peer, and every message of a peer reaches the real node.
func TestOneNodesViewUnderBroadcastRouting(t *testing.T) {
	c, clients := startView(t, "broadcast")
	sendToAll(t, c, clients)
	synthesize(t, c)
	for _, cl := range clients {
		receive(t, cl, len(clients)-1+peers)
	}
	got, strays := c.ForwardsIn()
	sends := int64(len(clients) * (c.Users() - 1))
	for i := range got {
		if mine := int64(len(clients) * usersPerNode); got[i] != sends || strays[i] != sends-mine {
			t.Errorf("peer p%d got %d forwards (%d for users elsewhere), want every one of %d (%d elsewhere)", i+1, got[i], strays[i], sends, sends-mine)
		}
	}
	if f := c.Stats().Failed.Load(); f != 0 {
		t.Errorf("%d of the peers' requests failed or were answered wrongly", f)
	}
}
