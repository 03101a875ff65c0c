// Package fakepeers speaks for the other N-1 nodes of a cluster to one real
// shard node: each synthetic peer is a gossip member (its own memberlist, on
// its own 127.x.y.z address) with a real link (package link's hello and
// framing), and speaks the router's own payloads (router/peerwire.go). The
// peers hold the users of the cluster that do not live on the real node,
// answer its lookups, forwards and registrations as their owners and holders
// would, and send it what their senders would (send.go). The real node
// cannot tell them from a cluster: that is one node's view of a big one.
package fakepeers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/shardchat/shard/link"
	"github.com/shardchat/shard/ring"
	"github.com/shardchat/shard/router"
)

// MaxPeers bounds the synthetic peers: their addresses are 127.1.x.y, 250
// per x.
const MaxPeers = 1000

// joinConcurrency bounds the peers joining the real node's gossip at once:
// each join is a TCP push/pull with it, and 16 at once timed out at 256
// nodes on the 2 shared cores.
const joinConcurrency = 4

// syncConcurrency bounds the peers dialing the real node at once: it
// refuses hellos past link.DefaultMaxHandshakes in progress.
const syncConcurrency = link.DefaultMaxHandshakes / 2

// Config says whom the peers speak to and for.
type Config struct {
	// Peers is how many synthetic peers: the cluster has Peers+1 nodes.
	Peers int
	// Node is the real node's name, and its gossip address to join.
	Node       string
	NodeGossip string
	// UsersPerNode: user i is "u<i>" and lives on node i mod (Peers+1),
	// node 0 being the real node (Users).
	UsersPerNode int
	// Broadcast says the real node routes by broadcast: every synthetic
	// message is forwarded to it (Send).
	Broadcast bool
	Logger    *slog.Logger
}

// Cluster is the set of synthetic peers around one real node.
type Cluster struct {
	cfg   Config
	names []string // node index -> name; 0 is the real node
	peers []*peer  // node index - 1

	// Set by Settle: the ring of every member, and the real node's.
	ring    *ring.Ring
	version string
	owner   []int16 // user index -> owner's node index
	nodeInc string

	// regs is what the real node registered with a synthetic owner: its
	// connections by user key.
	regsMu sync.Mutex
	regs   map[router.Key]int

	stats Stats
}

type peer struct {
	c     *Cluster
	index int
	name  string
	inc   string
	ln    net.Listener
	links *link.Links
	ml    *memberlist.Memberlist

	cacheMu sync.Mutex
	cache   map[int]time.Time // user index -> when its cached location expires

	forwardsIn atomic.Int64 // forwards the real node sent here
	strays     atomic.Int64 // of those, for a user that does not live here
}

// peerAddr is the loopback address of peer i (from 1).
func peerAddr(i int) string {
	return net.IPv4(127, 1, byte(i/250), byte(2+i%250)).String()
}

// Start starts cfg.Peers peers and has them join the real node's gossip.
// Call Settle once the real node sees all of them, Close at the end.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Peers < 1 || cfg.Peers > MaxPeers {
		return nil, fmt.Errorf("fakepeers: %d peers, want 1 to %d", cfg.Peers, MaxPeers)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{cfg: cfg, names: []string{cfg.Node}, regs: make(map[router.Key]int)}
	for i := 1; i <= cfg.Peers; i++ {
		c.names = append(c.names, "p"+strconv.Itoa(i))
	}
	for i := 1; i <= cfg.Peers; i++ {
		p, err := c.newPeer(i)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.peers = append(c.peers, p)
	}
	sem := make(chan struct{}, joinConcurrency)
	errs := make(chan error, len(c.peers))
	var wg sync.WaitGroup
	for _, p := range c.peers {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs <- p.join(ctx)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func (c *Cluster) newPeer(i int) (*peer, error) {
	b := make([]byte, 8)
	rand.Read(b)
	p := &peer{c: c, index: i, name: c.names[i], inc: hex.EncodeToString(b), cache: make(map[int]time.Time)}
	ln, err := net.Listen("tcp", net.JoinHostPort(peerAddr(i), "0"))
	if err != nil {
		return nil, fmt.Errorf("fakepeers: %s link: %w", p.name, err)
	}
	p.ln = ln
	p.links = link.New(link.Config{Self: p.name, Inc: p.inc, Logger: c.cfg.Logger}, ln)
	p.links.Serve(p.serve)
	return p, nil
}

func (p *peer) join(ctx context.Context) error {
	if err := p.startMember(); err != nil {
		return err
	}
	// The real node dials this peer as soon as gossip tells it of it: a
	// keyless link admits only a member it knows, with its incarnation.
	node, _, ok := p.nodeMember()
	if !ok {
		return fmt.Errorf("fakepeers: %s joined, but gossip does not show %s", p.name, p.c.cfg.Node)
	}
	p.links.SetPeers(map[string]link.Member{p.c.cfg.Node: node})
	return ctx.Err()
}

// Settle, once the real node routes by a ring of every peer and itself,
// makes the peers its peers on the links, registers with it the users it
// owns, and reports them synced for that ring, as real members would.
func (c *Cluster) Settle(ctx context.Context) error {
	node, scheme, ok := c.peers[0].nodeMember()
	if !ok {
		return fmt.Errorf("fakepeers: gossip does not show %s", c.cfg.Node)
	}
	// The peers' own gossip views may still be converging; the members are
	// known here all the same. The peers know this build's newest scheme:
	// the node's, if older, is the cluster's (a node of an older build).
	members := []router.Member{{Name: c.cfg.Node, Link: node.Addr, Inc: node.Inc, Ring: scheme}}
	for _, p := range c.peers {
		members = append(members, router.Member{Name: p.name, Link: p.ln.Addr().String(), Inc: p.inc})
	}
	rg, err := ring.NewScheme(scheme, c.names)
	if err != nil {
		return err
	}
	c.ring, c.version, c.nodeInc = rg, router.RingVersion(members), node.Inc
	c.owner = make([]int16, c.Users())
	index := make(map[string]int16, len(c.names))
	for i, n := range c.names {
		index[n] = int16(i)
	}
	for u := range c.owner {
		c.owner[u] = index[rg.Owner(User(u))]
	}
	errs := make(chan error, len(c.peers))
	sem := make(chan struct{}, syncConcurrency)
	for _, p := range c.peers {
		go func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			errs <- p.sync(ctx)
		}()
	}
	var first error
	for range c.peers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// sync registers with the real node the users of this peer it owns, then
// reports this peer synced for the ring version.
func (p *peer) sync(ctx context.Context) error {
	var regs []router.Registration
	for u := p.index; u < p.c.Users(); u += len(p.c.names) {
		if p.c.owner[u] == 0 {
			regs = append(regs, router.Registration{Key: router.Key{Name: User(u)}, Count: 1})
		}
	}
	if len(regs) > 0 {
		if _, err := p.ask(ctx, router.KindRegister, router.AppendRegister(nil, regs)); err != nil {
			return fmt.Errorf("fakepeers: %s register: %w", p.name, err)
		}
	}
	if _, err := p.ask(ctx, router.KindSynced, router.AppendSynced(nil, p.c.version)); err != nil {
		return fmt.Errorf("fakepeers: %s synced: %w", p.name, err)
	}
	return nil
}

// ask sends one request to the real node and waits for its reply.
func (p *peer) ask(ctx context.Context, k link.Kind, payload []byte) ([]byte, error) {
	type answer struct {
		p   []byte
		err error
	}
	ch := make(chan answer, 1)
	p.links.Request(p.c.cfg.Node, k, payload, func(b []byte, err error) { ch <- answer{b, err} })
	select {
	case a := <-ch:
		return a.p, a.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Users is how many users the cluster has.
func (c *Cluster) Users() int { return c.cfg.UsersPerNode * len(c.names) }

// User is the name of user u.
func User(u int) string { return "u" + strconv.Itoa(u) }

// Home is the node index user u lives on: 0 is the real node.
func (c *Cluster) Home(u int) int { return u % len(c.names) }

// NodeUsers are the users that live on the real node: its clients.
func (c *Cluster) NodeUsers() []int {
	var us []int
	for u := 0; u < c.Users(); u += len(c.names) {
		us = append(us, u)
	}
	return us
}

// Close stops every peer: their gossip first (they leave), then the links.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for _, p := range c.peers {
		if p.ml != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = p.ml.Leave(time.Second)
				_ = p.ml.Shutdown()
			}()
		}
	}
	wg.Wait()
	for _, p := range c.peers {
		p.links.Close()
	}
}

// errNotSettled: Send before Settle.
var errNotSettled = errors.New("fakepeers: not settled")
