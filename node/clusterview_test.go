package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/node"
	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/ring"
)

// live asks node i of c for GET /api/cluster/live and returns its members
// by name.
func live(t *testing.T, c *testcluster.Cluster, i int) map[string]protocol.LiveMember {
	t.Helper()
	var v protocol.ClusterLive
	getJSON(t, c.HTTP(i)+"/api/cluster/live", 200, &v)
	if v.Self != c.Nodes[i].Name() {
		t.Fatalf("GET /api/cluster/live on %s says self is %q", c.Nodes[i].Name(), v.Self)
	}
	byName := make(map[string]protocol.LiveMember, len(v.Members))
	for _, m := range v.Members {
		byName[m.Name] = m
	}
	return byName
}

// chatter makes a0 (on node 0) and b1 (on node 1) send to each other until
// the test ends, and drains what arrives.
func chatter(t *testing.T, a0, b0, a1, b1 *client.Client) {
	stop := make(chan struct{})
	var loops sync.WaitGroup
	t.Cleanup(func() {
		close(stop)
		loops.Wait()
	})
	for _, cl := range []*client.Client{a1, b0} {
		loops.Add(1)
		go func() {
			defer loops.Done()
			for {
				select {
				case <-cl.Messages():
				case <-stop:
					return
				}
			}
		}()
	}
	loops.Add(1)
	go func() {
		defer loops.Done()
		tick := time.NewTicker(5 * time.Millisecond) // 200 messages/s each way
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err1 := a0.Send(ctx, "b0", "ping")
			_, err2 := b1.Send(ctx, "a1", "pong")
			cancel()
			if err1 != nil || err2 != nil {
				t.Errorf("send while the cluster view watches: %v, %v", err1, err2)
				return
			}
		}
	}()
}

func TestClusterLiveShowsEachNodesConnectionsShareLinksAndRates(t *testing.T) {
	c := testcluster.Start(t, 2, nil)
	n0, n1 := c.Nodes[0].Name(), c.Nodes[1].Name()
	a0, a1, a2 := c.Dial(0, "a0"), c.Dial(0, "a1"), c.Dial(0, "a2")
	b0, b1 := c.Dial(1, "b0"), c.Dial(1, "b1")

	ms := live(t, c, 0)
	if len(ms) != 2 {
		t.Fatalf("the cluster view lists %d members of a 2-node cluster: %+v", len(ms), ms)
	}
	version := ""
	partitions := 0
	for name, want := range map[string]int{n0: 3, n1: 2} {
		m := ms[name]
		if m.State != "alive" || m.Node == nil || m.Error != "" {
			t.Fatalf("member %s in the cluster view: %+v, want alive with its figures", name, m)
		}
		f := m.Node
		if f.Connections != want {
			t.Fatalf("%s shows %d connections, want the %d clients dialed to it", name, f.Connections, want)
		}
		if f.State != "ready" || f.Inc == "" || f.Ring.Members != 2 || f.Ring.Total != ring.Latest.Partitions() || f.Ring.Partitions == 0 {
			t.Fatalf("%s's figures: %+v", name, f)
		}
		if version != "" && f.Ring.Version != version {
			t.Fatalf("the two nodes report ring versions %s and %s once settled", version, f.Ring.Version)
		}
		version = f.Ring.Version
		partitions += f.Ring.Partitions
	}
	if partitions != ring.Latest.Partitions() {
		t.Fatalf("the nodes' shares add up to %d partitions, want all %d", partitions, ring.Latest.Partitions())
	}
	// The link between the two is up both ways, with nothing waiting on it
	// in a quiet cluster.
	wait.For(t, 5*time.Second, 50*time.Millisecond, func() error {
		ms := live(t, c, 1)
		for name, peer := range map[string]string{n0: n1, n1: n0} {
			ls := ms[name].Node.Links
			if len(ls) != 1 || ls[0].Peer != peer || ls[0].State != "up" || !ls[0].Accepted || ls[0].Queued != 0 {
				return fmt.Errorf("%s's links: %+v, want one up both ways to %s, nothing queued", name, ls, peer)
			}
		}
		return nil
	})

	// While messages flow, every rate of both nodes is above zero: each
	// accepts messages, delivers the other's, and forwards its own.
	chatter(t, a0, b0, a1, b1)
	wait.For(t, 10*time.Second, 100*time.Millisecond, func() error {
		ms := live(t, c, 0)
		for _, name := range []string{n0, n1} {
			r := ms[name].Rates
			if r == nil || r.Messages <= 0 || r.Deliveries <= 0 || r.Peer <= 0 {
				return fmt.Errorf("%s's rates while messages flow: %+v, want all above 0", name, r)
			}
			if r.Messages > 1000 || r.Deliveries > 1000 {
				return fmt.Errorf("%s's rates: %+v, more than the 200 messages/s sent", name, r)
			}
		}
		return nil
	})

	// A client that goes is counted out.
	a2.Close()
	wait.For(t, 5*time.Second, 50*time.Millisecond, func() error {
		if got := live(t, c, 1)[n0].Node.Connections; got != 2 {
			return fmt.Errorf("%s shows %d connections after one of its 3 clients closed, want 2", n0, got)
		}
		return nil
	})
}

func TestClusterLiveShowsAMemberThatStoppedAnswering(t *testing.T) {
	c := testcluster.Start(t, 2, nil)
	n1 := c.Nodes[1].Name()
	c.Nodes[1].Kill()
	// Until gossip declares it dead it is alive and does not answer; then
	// it is dead and not asked.
	wait.For(t, 10*time.Second, 100*time.Millisecond, func() error {
		m := live(t, c, 0)[n1]
		if m.Node != nil || (m.State == "alive" && !strings.Contains(m.Error, "did not answer")) {
			return fmt.Errorf("%s, killed, in the cluster view: %+v", n1, m)
		}
		if m.State != "dead" {
			return fmt.Errorf("%s, killed, is %s, not yet dead", n1, m.State)
		}
		return nil
	})
}

func TestClusterViewNeedsTheAPIKeyWhenTheNodesHaveOne(t *testing.T) {
	const key = "view-key"
	c := testcluster.Start(t, 2, func(_ int, cfg *node.Config) { cfg.APIKey = key })
	ask := func(path, auth string) (int, string) {
		req, _ := http.NewRequest("GET", c.HTTP(0)+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, path := range []string{"/api/cluster/live", "/api/node"} {
		for _, auth := range []string{"", "Bearer wrong", key} {
			if status, body := ask(path, auth); status != 401 || !strings.Contains(body, `"unauthorized"`) {
				t.Fatalf("GET %s with Authorization %q: %d %s, want 401 unauthorized", path, auth, status, body)
			}
		}
		if status, body := ask(path, "Bearer "+key); status != 200 {
			t.Fatalf("GET %s with the key: %d %s", path, status, body)
		}
	}
	// The page itself holds nothing secret: it asks for the key.
	if status, body := ask("/cluster", ""); status != 200 || !strings.Contains(body, `id="key-form"`) {
		t.Fatalf("GET /cluster: %d, want 200 and the page with its key form", status)
	}
	// The serving node asks the others with the same key.
	_, body := ask("/api/cluster/live", "Bearer "+key)
	var v protocol.ClusterLive
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("GET /api/cluster/live with the key: %q: %v", body, err)
	}
	for _, m := range v.Members {
		if m.Node == nil {
			t.Fatalf("behind the api key, member %s has no figures in the cluster view: %s", m.Name, m.Error)
		}
	}
}
