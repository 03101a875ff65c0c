// Package sim simulates a cluster of shard nodes in one process: each node is
// the real router (router.New), its links an in-memory Network that counts
// what they carry and can delay, drop or cut, its gossip a membership that
// hands every router the same member list, as node.applyMembers does. It
// measures the routing design at sizes one machine cannot run as processes.
// It must never carry a routing decision of its own: what it measures is
// the router's.
package sim

import (
	"sort"
	"sync"
	"time"

	"github.com/shardchat/shard/link"
	"github.com/shardchat/shard/router"
)

// frameHeader is what the link adds to a payload on the wire: a 4-byte
// length, the kind and a request id (a uvarint, 2 bytes for most).
const frameHeader = 4 + 1 + 2

// endpointQueue bounds the frames waiting at one simulated node, as the
// link's queue does: 65,536 frames is seconds of a busy node's traffic.
const endpointQueue = 1 << 16

// Network is the in-memory link layer between simulated nodes.
type Network struct {
	mu        sync.Mutex
	endpoints map[string]*Endpoint
	cut       map[string]bool
	latency   time.Duration
	dropEvery int // drop one request in dropEvery; 0: none
	sent      int
	traffic   map[string]*KindTraffic
}

// KindTraffic is what the network carried of one kind of request.
type KindTraffic struct {
	Requests   int64 `json:"requests"`
	Bytes      int64 `json:"bytes"` // requests and their replies, with frame headers
	Dropped    int64 `json:"dropped,omitempty"`
	Backlogged int64 `json:"backlogged,omitempty"` // refused: the peer's queue was full
}

// NewNetwork is a network with no latency, no loss and no node cut off.
func NewNetwork() *Network {
	return &Network{endpoints: make(map[string]*Endpoint), cut: make(map[string]bool),
		traffic: make(map[string]*KindTraffic)}
}

// SetLatency delays every frame, request or reply, by d.
func (n *Network) SetLatency(d time.Duration) {
	n.mu.Lock()
	n.latency = d
	n.mu.Unlock()
}

// SetDropEvery loses one request in every (0: none); its sender hears that
// the link broke (link.ErrPeerDown), as it would from a real link.
func (n *Network) SetDropEvery(every int) {
	n.mu.Lock()
	n.dropEvery = every
	n.mu.Unlock()
}

// Cut cuts node off from every other node (or heals it): requests either
// way fail with link.ErrPeerDown, those waiting for an answer included.
func (n *Network) Cut(node string, off bool) {
	n.mu.Lock()
	n.cut[node] = off
	eps := n.endpointList()
	n.mu.Unlock()
	if !off {
		return
	}
	for _, e := range eps {
		e.failPending(func(p pending) bool { return e.self.Name == node || p.peer == node })
	}
}

// Traffic returns a copy of what the network carried so far, by kind name.
func (n *Network) Traffic() map[string]KindTraffic {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[string]KindTraffic, len(n.traffic))
	for k, t := range n.traffic {
		out[k] = *t
	}
	return out
}

// Endpoint makes the transport of node self; it replaces any former one.
func (n *Network) Endpoint(self link.Peer) *Endpoint {
	e := &Endpoint{net: n, self: self, wake: make(chan struct{}, 1), stop: make(chan struct{}),
		pending: make(map[uint64]pending)}
	n.mu.Lock()
	n.endpoints[self.Name] = e
	n.mu.Unlock()
	return e
}

func (n *Network) endpointList() []*Endpoint {
	eps := make([]*Endpoint, 0, len(n.endpoints))
	for _, e := range n.endpoints {
		eps = append(eps, e)
	}
	sort.Slice(eps, func(i, j int) bool { return eps[i].self.Name < eps[j].self.Name })
	return eps
}

// count records a frame of kind k; it reports whether to drop it.
func (n *Network) count(k link.Kind, bytes int, request bool) (drop bool, latency time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	name := router.KindName(k)
	t := n.traffic[name]
	if t == nil {
		t = &KindTraffic{}
		n.traffic[name] = t
	}
	t.Bytes += int64(bytes + frameHeader)
	if request {
		t.Requests++
		n.sent++
		if n.dropEvery > 0 && n.sent%n.dropEvery == 0 {
			t.Dropped++
			return true, n.latency
		}
	}
	return false, n.latency
}

func (n *Network) backlogged(k link.Kind) {
	n.mu.Lock()
	n.traffic[router.KindName(k)].Backlogged++
	n.mu.Unlock()
}

// route returns the endpoint of peer, nil when it is gone or cut off from
// from.
func (n *Network) route(from, peer string) *Endpoint {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cut[from] || n.cut[peer] {
		return nil
	}
	return n.endpoints[peer]
}

// Endpoint is one simulated node's router.Transport: link.Links in memory.
// Like a link's reader, it serves the requests it gets, and takes the
// replies to its own, in order on one goroutine.
type Endpoint struct {
	net  *Network
	self link.Peer

	mu      sync.Mutex
	serve   link.Handler
	peers   map[string]link.Member
	queue   []delivery
	pending map[uint64]pending
	nextID  uint64
	closed  bool
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

var _ router.Transport = (*Endpoint)(nil)

// A delivery is a frame on its way: run at or after at.
type delivery struct {
	at  time.Time
	run func()
}

// pending is a request this endpoint sent that waits for its reply.
type pending struct {
	peer string
	cb   func([]byte, error)
}

// Serve starts the endpoint's goroutine; Close stops it.
func (e *Endpoint) Serve(h link.Handler) {
	e.mu.Lock()
	e.serve = h
	e.done = make(chan struct{})
	e.mu.Unlock()
	go e.loop()
}

func (e *Endpoint) loop() {
	defer close(e.done)
	for {
		select {
		case <-e.stop:
			return
		case <-e.wake:
		}
		e.mu.Lock()
		q := e.queue
		e.queue = nil
		e.mu.Unlock()
		for _, d := range q {
			if wait := time.Until(d.at); wait > 0 {
				select {
				case <-time.After(wait):
				case <-e.stop:
					return
				}
			}
			d.run()
		}
	}
}

// enqueue hands run to e's goroutine; false when e is closed or full.
func (e *Endpoint) enqueue(at time.Time, run func()) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || len(e.queue) >= endpointQueue {
		return false
	}
	e.queue = append(e.queue, delivery{at, run})
	select {
	case e.wake <- struct{}{}:
	default:
	}
	return true
}

// SetPeers replaces the peers requests may go to, as link.Links does.
func (e *Endpoint) SetPeers(peers map[string]link.Member) {
	e.mu.Lock()
	e.peers = peers
	e.mu.Unlock()
}

// RequestCounted sends a request to peer, adding n to sent if it goes out;
// cb gets the reply or an error exactly once, on this endpoint's goroutine
// unless the request did not go out.
func (e *Endpoint) RequestCounted(peer string, k link.Kind, payload []byte, sent link.Counter, n float64, cb func([]byte, error)) bool {
	e.mu.Lock()
	_, known := e.peers[peer]
	closed := e.closed
	e.mu.Unlock()
	switch {
	case closed:
		cb(nil, link.ErrPeerDown)
		return false
	case !known:
		cb(nil, link.ErrPeerUnknown)
		return false
	}
	drop, latency := e.net.count(k, len(payload), true)
	dst := e.net.route(e.self.Name, peer)
	if dst == nil {
		cb(nil, link.ErrPeerDown)
		return false
	}
	// Closed is checked again where the request joins pending, under the
	// same lock: a Close between the first check and here has failed every
	// request pending, and would never fail this one.
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		cb(nil, link.ErrPeerDown)
		return false
	}
	e.nextID++
	id := e.nextID
	e.pending[id] = pending{peer, cb}
	e.mu.Unlock()
	at := time.Now().Add(latency)
	if drop {
		// The link broke under the request: its sender hears so.
		countSent(sent, n)
		e.enqueue(at, func() { e.answer(id, nil, link.ErrPeerDown) })
		return true
	}
	p := append([]byte(nil), payload...) // the caller may reuse its buffer
	from := e.self
	if !dst.enqueue(at, func() {
		if e.net.route(from.Name, dst.self.Name) == nil {
			return // cut meanwhile: Cut failed the request
		}
		dst.serve(from, k, p, func(reply []byte) { e.reply(dst, id, k, reply) })
	}) {
		e.net.backlogged(k)
		// dst may have closed meanwhile and failed the request already:
		// the callback runs once, by whoever takes it out of pending.
		e.mu.Lock()
		_, ours := e.pending[id]
		delete(e.pending, id)
		e.mu.Unlock()
		if ours {
			cb(nil, link.ErrBackpressure)
		}
		return false
	}
	countSent(sent, n) // the reply comes after the network's latency, on e's goroutine
	return true
}

// countSent adds n to sent, when there is one.
func countSent(sent link.Counter, n float64) {
	if sent != nil {
		sent.Add(n)
	}
}

// reply carries the answer to request id from dst back to e.
func (e *Endpoint) reply(dst *Endpoint, id uint64, k link.Kind, reply []byte) {
	_, latency := e.net.count(k, len(reply), false)
	if e.net.route(dst.self.Name, e.self.Name) == nil {
		return // cut or gone: the request was failed
	}
	r := append([]byte(nil), reply...)
	if !e.enqueue(time.Now().Add(latency), func() { e.answer(id, r, nil) }) {
		e.answer(id, nil, link.ErrBackpressure)
	}
}

// answer calls the callback of request id, unless it was failed already.
func (e *Endpoint) answer(id uint64, reply []byte, err error) {
	e.mu.Lock()
	p, ok := e.pending[id]
	delete(e.pending, id)
	e.mu.Unlock()
	if ok {
		p.cb(reply, err)
	}
}

// failPending fails the requests waiting for a reply that match.
func (e *Endpoint) failPending(match func(pending) bool) {
	e.mu.Lock()
	var failed []pending
	for id, p := range e.pending {
		if match(p) {
			failed = append(failed, p)
			delete(e.pending, id)
		}
	}
	e.mu.Unlock()
	for _, p := range failed {
		p.cb(nil, link.ErrPeerDown)
	}
}

// Queued is the number of frames waiting at this endpoint.
func (e *Endpoint) Queued() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.queue)
}

// Close takes the endpoint down as a process that stops: requests to it
// fail from now on, and those waiting for it, here or at its peers, fail now.
func (e *Endpoint) Close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	e.queue = nil
	done := e.done
	e.mu.Unlock()
	close(e.stop)
	if done != nil {
		<-done
	}
	e.net.mu.Lock()
	if e.net.endpoints[e.self.Name] == e {
		delete(e.net.endpoints, e.self.Name)
	}
	eps := e.net.endpointList()
	e.net.mu.Unlock()
	e.failPending(func(pending) bool { return true })
	for _, o := range eps {
		o.failPending(func(p pending) bool { return p.peer == e.self.Name })
	}
}
