package sim

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardchat/shard/link"
	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/router"
)

// Cluster is N simulated nodes on one Network, and the users connected to
// them: the truth that the owners' directories are checked against.
type Cluster struct {
	Net  *Network
	mode router.Mode

	mu    sync.Mutex
	nodes map[string]*Node
	left  map[string]bool // members that are draining: they own nothing
	named int             // nodes made so far: the next one's number
	users map[string]*user
	rng   *rand.Rand
}

// Node is one simulated node: a real router, fed its membership the way
// node.Node's membership loop feeds it.
type Node struct {
	Name   string
	Inc    string
	Router *router.Router

	mu      sync.Mutex
	latest  []router.Member
	changed chan struct{} // a new member list is in latest
	stop    chan struct{}
	done    chan struct{}
}

// user is one user's one connection, and the rooms it joined.
type user struct {
	name  string
	node  string
	conn  *Conn // nil while it moves between nodes
	rooms []string
	// gen changes whenever the user's connection goes or comes: a send
	// whose recipient kept one gen throughout was sent to a connected user.
	gen int
}

// NewCluster starts n nodes routing by mode and gives each the member list.
func NewCluster(n int, mode router.Mode, seed uint64) *Cluster {
	c := &Cluster{Net: NewNetwork(), mode: mode, nodes: make(map[string]*Node), left: make(map[string]bool),
		users: make(map[string]*user), rng: rand.New(rand.NewPCG(seed, 14))}
	c.mu.Lock()
	for range n {
		c.startLocked()
	}
	c.announceLocked()
	c.mu.Unlock()
	return c
}

// startLocked makes a node and starts its membership loop; it is not a
// member until the next announcement.
func (c *Cluster) startLocked() *Node {
	c.named++
	name := nodeName(c.named)
	inc := name + "-" + strconv.Itoa(c.named)
	nd := &Node{Name: name, Inc: inc, changed: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	ep := c.Net.Endpoint(link.Peer{Name: name, Inc: inc})
	nd.Router = router.New(router.Config{Self: name, Incarnation: inc, Mode: c.mode,
		Metrics: router.NewMetrics(prometheus.NewRegistry())}, ep)
	c.nodes[name] = nd
	go nd.membershipLoop()
	return nd
}

// nodeName is the name of the i-th node a cluster makes, from 1.
func nodeName(i int) string { return fmt.Sprintf("node-%03d", i) }

// membershipLoop applies the latest member list, one at a time, as
// node.Node's does on each burst of gossip events.
func (nd *Node) membershipLoop() {
	defer close(nd.done)
	for {
		select {
		case <-nd.stop:
			return
		case <-nd.changed:
		}
		nd.mu.Lock()
		members := nd.latest
		nd.mu.Unlock()
		_ = nd.Router.SetMembers(members) // a failed registration is retried by the router
	}
}

// announceLocked hands every node the current member list: the gossip,
// converged at once.
func (c *Cluster) announceLocked() {
	c.announceToLocked(slices.Collect(maps.Values(c.nodes)))
}

// announceToLocked hands the current member list to to alone: the others
// have not heard yet.
func (c *Cluster) announceToLocked(to []*Node) {
	var members []router.Member
	for _, nd := range c.nodes {
		members = append(members, router.Member{Name: nd.Name, Link: nd.Name, Inc: nd.Inc, Left: c.left[nd.Name]})
	}
	sort.Slice(members, func(i, j int) bool { return members[i].Name < members[j].Name })
	for _, nd := range to {
		nd.mu.Lock()
		nd.latest = members
		nd.mu.Unlock()
		select {
		case nd.changed <- struct{}{}:
		default:
		}
	}
}

func (nd *Node) stopNode() {
	close(nd.stop)
	<-nd.done
	nd.Router.Close()
}

// Close stops every node.
func (c *Cluster) Close() {
	c.mu.Lock()
	nodes := slices.Collect(maps.Values(c.nodes))
	c.nodes = map[string]*Node{}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, nd := range nodes {
		wg.Add(1)
		go func() { defer wg.Done(); nd.stopNode() }()
	}
	wg.Wait()
}

// Members is the names of the nodes that own keys, sorted.
func (c *Cluster) Members() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.membersLocked()
}

func (c *Cluster) membersLocked() []string {
	var names []string
	for name := range c.nodes {
		if !c.left[name] {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// Node returns the node of that name, nil when there is none.
func (c *Cluster) Node(name string) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[name]
}

// WaitRing waits until every node routes by the ring of the current
// members, or ctx ends.
func (c *Cluster) WaitRing(ctx context.Context) error {
	for {
		if err := c.ringsAgree(); err == nil {
			return nil
		} else if ctx.Err() != nil {
			return err
		}
		select {
		case <-time.After(2 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

func (c *Cluster) ringsAgree() error {
	c.mu.Lock()
	want := c.membersLocked()
	nodes := slices.Collect(maps.Values(c.nodes))
	c.mu.Unlock()
	for _, nd := range nodes {
		if got := nd.Router.Ring().Members(); !slices.Equal(got, want) {
			return fmt.Errorf("%s routes by %d members, the cluster has %d", nd.Name, len(got), len(want))
		}
	}
	return nil
}

// Connect attaches a connection of name on node, and joins it to rooms.
func (c *Cluster) Connect(name, node string, rooms ...string) error {
	c.mu.Lock()
	nd := c.nodes[node]
	u := c.users[name]
	if u == nil {
		u = &user{name: name}
		c.users[name] = u
	}
	c.mu.Unlock()
	if nd == nil {
		return fmt.Errorf("connect %s: no node %s", name, node)
	}
	conn := newConn(name)
	if err := nd.Router.Attach(conn); err != nil {
		return fmt.Errorf("connect %s to %s: %w", name, node, err)
	}
	for _, room := range rooms {
		if st := <-conn.handle(nd.Router, &protocol.Frame{Type: protocol.TypeJoin, ID: "j-" + room, Room: room}); st != protocol.StatusOK {
			return fmt.Errorf("%s joins %s on %s: %s", name, room, node, st)
		}
	}
	c.mu.Lock()
	u.node, u.conn, u.rooms = node, conn, rooms
	u.gen++
	c.mu.Unlock()
	return nil
}

// Join starts a node and makes it a member; it returns its name.
func (c *Cluster) Join() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	nd := c.startLocked()
	c.announceLocked()
	return nd.Name
}

// joinHeardBy starts a node and makes it a member on the named nodes'
// views (and its own) alone, as gossip that has not reached the others
// yet; it returns its name.
func (c *Cluster) joinHeardBy(names []string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	nd := c.startLocked()
	to := []*Node{nd}
	for _, name := range names {
		if other := c.nodes[name]; other != nil {
			to = append(to, other)
		}
	}
	c.announceToLocked(to)
	return nd.Name
}

// crash stops nodes without a drain, as a failure does: their users are
// cut off, and every node hears at once that they are gone.
func (c *Cluster) crash(nodes ...string) {
	c.mu.Lock()
	var stopped []*Node
	for _, name := range nodes {
		if nd := c.nodes[name]; nd != nil {
			stopped = append(stopped, nd)
			delete(c.nodes, name)
		}
	}
	for _, u := range c.users {
		if slices.Contains(nodes, u.node) && u.conn != nil {
			u.conn = nil
			u.gen++
		}
	}
	c.announceLocked()
	c.mu.Unlock()
	for _, nd := range stopped {
		nd.stopNode()
	}
}

// Leave drains node as node.Drain does: the members hear that it left (it
// owns nothing from then on), its users reconnect to other nodes, it waits
// for its unregistrations to land, and it stops and is forgotten.
func (c *Cluster) Leave(ctx context.Context, node string) error {
	c.mu.Lock()
	nd := c.nodes[node]
	if nd == nil || c.left[node] {
		c.mu.Unlock()
		return fmt.Errorf("leave %s: not a member", node)
	}
	c.left[node] = true
	c.announceLocked()
	others := c.membersLocked()
	var moving []*user
	for _, u := range c.users {
		if u.node == node {
			moving = append(moving, u)
		}
	}
	c.mu.Unlock()
	sort.Slice(moving, func(i, j int) bool { return moving[i].name < moving[j].name })
	var firstErr error
	for _, u := range moving {
		c.mu.Lock()
		conn, rooms := u.conn, u.rooms
		u.conn = nil
		u.gen++
		to := others[c.rng.IntN(len(others))]
		c.mu.Unlock()
		if conn != nil {
			nd.Router.Closed(conn, "restart")
		}
		if err := c.Connect(u.name, to, rooms...); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if err := nd.Router.WaitRegistrations(ctx); err != nil && firstErr == nil {
		firstErr = fmt.Errorf("leave %s: unregistrations: %w", node, err)
	}
	c.mu.Lock()
	delete(c.nodes, node)
	delete(c.left, node)
	c.announceLocked()
	c.mu.Unlock()
	nd.stopNode()
	return firstErr
}

// truthLocked is what the directories must say: for every key some
// connection holds, how many each node holds.
func (c *Cluster) truthLocked() map[router.Key]map[string]int {
	truth := make(map[router.Key]map[string]int)
	add := func(k router.Key, node string) {
		if truth[k] == nil {
			truth[k] = make(map[string]int)
		}
		truth[k][node]++
	}
	for _, u := range c.users {
		if u.conn == nil {
			continue
		}
		add(router.Key{Name: u.name}, u.node)
		for _, room := range u.rooms {
			add(router.Key{Room: true, Name: room}, u.node)
		}
	}
	return truth
}

// Keys is every key some connection holds now.
func (c *Cluster) Keys() []router.Key {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Collect(maps.Keys(c.truthLocked()))
}

// CheckDirectories returns nil when every node routes by the current ring
// and every owner's directory lists exactly the connections that exist of
// the keys it owns: no holder missing, none extra, every count right.
func (c *Cluster) CheckDirectories() error {
	if err := c.ringsAgree(); err != nil {
		return err
	}
	c.mu.Lock()
	truth := c.truthLocked()
	nodes := maps.Clone(c.nodes)
	c.mu.Unlock()
	var rg interface{ Owner(string) string }
	entries := make(map[string]map[router.Key][]router.Location, len(nodes))
	for name, nd := range nodes {
		rg = nd.Router.Ring()
		entries[name] = nd.Router.DirectoryEntries()
	}
	if rg == nil {
		return nil
	}
	for key, want := range truth {
		owner := rg.Owner(key.Name)
		got := entries[owner][key]
		if !sameHolders(got, want) {
			return fmt.Errorf("%s lists %v for %s, the connections are %v", owner, got, key, want)
		}
	}
	for name, es := range entries {
		for key, got := range es {
			if rg.Owner(key.Name) == name && truth[key] == nil {
				return fmt.Errorf("%s lists %v for %s, which no connection holds", name, got, key)
			}
		}
	}
	return nil
}

func sameHolders(got []router.Location, want map[string]int) bool {
	if len(got) != len(want) {
		return false
	}
	for _, l := range got {
		if want[l.Node] != l.Count {
			return false
		}
	}
	return true
}

// WaitDirectories polls CheckDirectories until it passes or ctx ends; it
// returns how long it took and the last error.
func (c *Cluster) WaitDirectories(ctx context.Context, since time.Time) (time.Duration, error) {
	for {
		err := c.CheckDirectories()
		if err == nil {
			return time.Since(since), nil
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return time.Since(since), err
		}
	}
}
