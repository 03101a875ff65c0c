package sim

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"time"

	"github.com/shardchat/shard/ring"
	"github.com/shardchat/shard/router"
)

// Change is what one membership change cost and how long the directories
// took to be exactly right again.
type Change struct {
	KeysMoved float64 `json:"keys_moved"` // fraction of the keys held whose owner changed
	// RingMoved is the share of the ring's partitions whose owner changed:
	// the share of all keys, without the noise of a few hundred.
	RingMoved float64 `json:"ring_moved"`
	Promise   float64 `json:"promise"`   // what consistent hashing promises: 1/members after a join
	Registers int64   `json:"registers"` // register requests sent
	// Gainers are the members the change gave partitions to: the owners
	// that wait for every member's synced.
	Gainers  int              `json:"gainers"`
	Messages int64            `json:"messages"` // every node-to-node request sent
	ByKind   map[string]int64 `json:"by_kind"`  // those requests by kind
	// RightMS is from the announcement of the change until every directory
	// listed exactly the connections that exist.
	RightMS float64 `json:"right_ms"`
}

// RingChanges measures one join to n nodes, then the leave of that node.
func RingChanges(n int, seed uint64) (join, leave Change, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := populated(ctx, n, seed)
	if err != nil {
		return join, leave, fmt.Errorf("before the join: %w", err)
	}
	defer c.Close()
	var joined string
	join, err = c.measureChange(ctx, func() error { joined = c.Join(); return nil })
	if err != nil {
		return join, leave, fmt.Errorf("join: %w", err)
	}
	leave, err = c.measureChange(ctx, func() error { return c.Leave(ctx, joined) })
	if err != nil {
		return join, leave, fmt.Errorf("leave: %w", err)
	}
	return join, leave, nil
}

// Flap measures, on n nodes, a node that joins and dies before half of the
// cluster heard of it, while another node dies too: that half goes from
// the view before straight to the view without the other node, the rest
// through the view with the newcomer, in which the owners dropped the
// entries of the keys it took. The holders that never saw it find no change
// of owner for those keys, yet the owners that got them back must hear
// them again. The change counts from the join; the keys moved are the dead
// node's.
func Flap(n int, seed uint64) (Change, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := populated(ctx, n, seed)
	if err != nil {
		return Change{}, fmt.Errorf("before the flap: %w", err)
	}
	defer c.Close()
	members := c.Members()
	var heard []string // every other node, so that each half holds users
	for i := 0; i < n; i += 2 {
		heard = append(heard, members[i])
	}
	ch, err := c.measureChange(ctx, func() error {
		joined := c.joinHeardBy(heard)
		for _, name := range heard {
			if err := c.waitRingHas(ctx, name, joined); err != nil {
				return err
			}
		}
		c.crash(joined, members[n-1])
		return nil
	})
	if err != nil {
		return ch, fmt.Errorf("flap: %w", err)
	}
	return ch, nil
}

// waitRingHas waits until node routes by a ring that has member.
func (c *Cluster) waitRingHas(ctx context.Context, node, member string) error {
	nd := c.Node(node)
	for !nd.Router.Ring().Has(member) {
		select {
		case <-time.After(time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("%s never routed by a ring with %s: %w", node, member, ctx.Err())
		}
	}
	return nil
}

// populated starts n nodes, connects usersPerNode users to each and waits
// until every directory lists them.
func populated(ctx context.Context, n int, seed uint64) (*Cluster, error) {
	c := NewCluster(n, router.Owner, seed)
	members := c.Members()
	for i := range n * usersPerNode {
		if err := c.Connect(userName(i), members[i%n]); err != nil {
			c.Close()
			return nil, err
		}
	}
	if _, err := c.WaitDirectories(ctx, time.Now()); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// measureChange runs change and waits for the directories.
func (c *Cluster) measureChange(ctx context.Context, change func() error) (Change, error) {
	keys := c.Keys()
	oldRing, err := ring.New(c.Members())
	if err != nil {
		return Change{}, err
	}
	runtime.GC() // not in the middle of the measurement
	before := c.Net.Traffic()
	start := time.Now()
	if err := change(); err != nil {
		return Change{}, err
	}
	took, err := c.WaitDirectories(ctx, start)
	if err != nil {
		return Change{}, err
	}
	after := c.Net.Traffic()
	newMembers := c.Members()
	newRing, err := ring.New(newMembers)
	if err != nil {
		return Change{}, err
	}
	moved := 0
	for _, k := range keys {
		if oldRing.Owner(k.Name) != newRing.Owner(k.Name) {
			moved++
		}
	}
	ch := Change{RingMoved: newRing.Moved(oldRing), KeysMoved: float64(moved) / float64(len(keys)), RightMS: ms(took),
		Gainers: len(newRing.Gainers(oldRing)),
		Promise: 1 / float64(max(len(newMembers), oldRing.Len())), ByKind: make(map[string]int64)}
	for k, t := range after {
		d := t.Requests - before[k].Requests
		ch.Messages += d
		if d > 0 {
			ch.ByKind[k] = d
		}
		if k == "register" {
			ch.Registers = d
		}
	}
	return ch, nil
}

// Spread is how the share of keys one join moves varies with the name of
// the node that joins, as a multiple of consistent hashing's promise 1/N:
// the one join a cluster makes is a single draw of it.
type Spread struct {
	Joins int     `json:"joins"`
	Mean  float64 `json:"mean"`
	Min   float64 `json:"min"`
	Max   float64 `json:"max"`
}

// JoinSpread measures joins made-up joins, each of a node of another name,
// to the ring of n nodes named as NewCluster names them.
func JoinSpread(n, joins int) (Spread, error) {
	members := make([]string, n)
	for i := range members {
		members[i] = nodeName(i + 1)
	}
	before, err := ring.New(members)
	if err != nil {
		return Spread{}, err
	}
	sp := Spread{Joins: joins, Min: math.Inf(1), Max: math.Inf(-1)}
	for j := range joins {
		after, err := ring.New(append(members[:n:n], fmt.Sprintf("joiner-%d", j)))
		if err != nil {
			return Spread{}, err
		}
		x := after.Moved(before) * float64(n+1)
		sp.Mean += x / float64(joins)
		sp.Min, sp.Max = min(sp.Min, x), max(sp.Max, x)
	}
	return sp, nil
}
