// Package testcluster starts shard clusters on loopback for tests: real
// nodes, real sockets, random free ports; in-process nodes, or whole
// processes through internal/shardproc, killed when the test ends. It is
// never used in production code, nor by bench.
package testcluster

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/node"
)

// Cluster is a set of in-process nodes that joined each other.
type Cluster struct {
	t     testing.TB
	Nodes []*node.Node
}

// Logger is the log of test nodes: quiet unless SHARD_TEST_LOG=debug.
func Logger() *slog.Logger {
	if os.Getenv("SHARD_TEST_LOG") == "debug" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// Config is the configuration of test node i: loopback, free ports.
func Config(i int) node.Config {
	return node.Config{
		Name:         fmt.Sprintf("node-%d", i),
		HTTP:         "127.0.0.1:0",
		Gossip:       "127.0.0.1:0",
		Link:         "127.0.0.1:0",
		JoinTimeout:  10 * time.Second,
		DrainTimeout: 5 * time.Second,
		Logger:       Logger(),
	}
}

// Start starts n nodes, the later ones joining the first, and waits until
// every node routes by a ring of all n. edit, when set, changes a node's
// configuration before it starts. The nodes are killed when the test ends.
func Start(t testing.TB, n int, edit func(i int, cfg *node.Config)) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	t.Cleanup(c.Stop)
	for i := 0; i < n; i++ {
		cfg := Config(i)
		if i > 0 {
			cfg.Join = []string{c.Nodes[0].GossipAddr()}
		}
		if edit != nil {
			edit(i, &cfg)
		}
		nd, err := node.Start(cfg)
		if err != nil {
			t.Fatalf("start node %d: %v", i, err)
		}
		c.Nodes = append(c.Nodes, nd)
	}
	c.WaitRing(n)
	return c
}

// WaitRing waits until every running node routes by the same ring of want
// members.
func (c *Cluster) WaitRing(want int) {
	c.t.Helper()
	wait.For(c.t, 15*time.Second, 20*time.Millisecond, func() error {
		version := ""
		for _, nd := range c.Nodes {
			rg := nd.Router().Ring()
			if rg.Len() != want {
				return fmt.Errorf("%s routes by a ring of %d members, want %d", nd.Name(), rg.Len(), want)
			}
			if version == "" {
				version = rg.Version()
			} else if rg.Version() != version {
				return fmt.Errorf("nodes disagree on the ring version")
			}
		}
		return nil
	})
}

// Stop kills every node.
func (c *Cluster) Stop() {
	for _, nd := range c.Nodes {
		nd.Kill()
	}
}

// URL is the WebSocket URL of node i.
func (c *Cluster) URL(i int) string {
	return "ws://" + c.Nodes[i].HTTPAddr() + "/ws"
}

// HTTP is the base http URL of node i.
func (c *Cluster) HTTP(i int) string {
	return "http://" + c.Nodes[i].HTTPAddr()
}

// Dial connects user to node i and closes the client when the test ends.
func (c *Cluster) Dial(i int, user string) *client.Client {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, client.Options{URL: c.URL(i), User: user})
	if err != nil {
		c.t.Fatalf("dial %s as %s: %v", c.Nodes[i].Name(), user, err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// Counter sums the samples of the counter or gauge name on node i whose
// labels include every label=value of match.
func (c *Cluster) Counter(i int, name string, match ...string) float64 {
	c.t.Helper()
	return Gather(c.t, c.Nodes[i].Registry(), name, match...)
}

// CounterAll sums Counter over all nodes.
func (c *Cluster) CounterAll(name string, match ...string) float64 {
	total := 0.0
	for i := range c.Nodes {
		total += c.Counter(i, name, match...)
	}
	return total
}

// Gather sums the samples of metric name in g whose labels include every
// "label=value" in match.
func Gather(t testing.TB, g prometheus.Gatherer, name string, match ...string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	total := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if labelsMatch(m, match) {
				total += value(m)
			}
		}
	}
	return total
}

func labelsMatch(m *dto.Metric, match []string) bool {
	for _, kv := range match {
		k, v, _ := strings.Cut(kv, "=")
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}
