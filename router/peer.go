package router

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/shardchat/shard/link"
)

// A peer's request is served by the function registered for its kind, in
// the file of the capability it belongs to (route.go: forward, locate.go:
// lookup, ...): a new kind of node-to-node traffic is one more file, not a
// case in a switch here.

// peerServer serves one request from a peer. It runs on that link's reader
// and must not block: slow work answers later through reply, exactly once.
type peerServer func(r *Router, from link.Peer, p []byte, reply func([]byte))

type peerRequest struct {
	name  string // the `kind` label of the peer message metrics
	serve peerServer
}

var peerRequests = map[kind]peerRequest{}

// servePeer registers the server of requests of kind k, named name. It runs
// at init; a kind registered twice is a programming error.
func servePeer(k kind, name string, serve peerServer) {
	if k < kind(link.FirstRequestKind) {
		panic(fmt.Sprintf("router: request kind %d is the link's own", k))
	}
	if old, dup := peerRequests[k]; dup {
		panic(fmt.Sprintf("router: request kind %d registered twice (%s, %s)", k, old.name, name))
	}
	peerRequests[k] = peerRequest{name, serve}
}

// handlePeer serves one request from another node.
func (r *Router) handlePeer(from link.Peer, lk link.Kind, p []byte, reply func([]byte)) {
	k := kind(lk)
	pr, ok := peerRequests[k]
	if !ok {
		r.log.Warn("unknown request from peer", "peer", from.Name, "kind", k)
		reply(nil)
		return
	}
	// Every request is answered exactly once (the Handler's contract), so
	// it is counted as answered here rather than by wrapping reply, which
	// would cost an allocation per request.
	r.m.peerReplies.with(pr.name).Inc()
	pr.serve(r, from, p, reply)
}

// applyRegistrations records node's counts and calls done once every node
// that cached an answer for one of those keys has dropped it: from then on
// a message sent from any node finds the new state.
func (r *Router) applyRegistrations(holder link.Peer, regs []registration, done func()) {
	now := time.Now()
	tell := make(map[string][]Key)
	for _, reg := range regs {
		for _, w := range r.dir.Set(reg.key, holder.Name, holder.Inc, reg.count, now) {
			tell[w] = append(tell[w], reg.key)
		}
	}
	if len(tell) == 0 {
		done()
		return
	}
	var left atomic.Int32
	left.Store(int32(len(tell)))
	for w, keys := range tell {
		// A watcher still in the cluster must hear of the change, or it
		// would route by a stale answer for up to CacheTTL: try a few
		// times. One that is gone resets its cache anyway.
		stillMember := func() bool { return r.view.Load().inc[w] != "" }
		r.requestWhile(w, kindInvalidate, len(keys), appendKeys(nil, keys), 4, stillMember, func(err error) {
			if err != nil {
				r.log.Warn("watcher not told of a change", "peer", w, "err", err)
			}
			if left.Add(-1) == 0 {
				// This runs on the reader of the link to w; done may
				// answer another peer and wait for room in that link.
				go done()
			}
		})
	}
}

// request sends one request, counted as n messages when it goes out, to
// peer through the transport. The transport counts it before the reply
// can come: counted after, a count read once the reply's effects showed
// (an ack, a delivery) could lack it.
func (r *Router) request(peer string, k kind, n int, payload []byte, cb func([]byte, error)) {
	r.links.RequestCounted(peer, link.Kind(k), payload, r.m.peerSent.with(k.String()), float64(n), cb)
}

// ask sends one request to peer and waits for its reply, or for ctx.
func (r *Router) ask(ctx context.Context, peer string, k kind, payload []byte) ([]byte, error) {
	type answer struct {
		p   []byte
		err error
	}
	ch := make(chan answer, 1)
	r.request(peer, k, 1, payload, func(p []byte, err error) { ch <- answer{p, err} })
	select {
	case a := <-ch:
		return a.p, a.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// requestWhile sends a request to peer, and sends it again after a failure
// (50 ms, 100 ms, ... later) while keep says the peer still needs it, at
// most attempts times in all; last gets the final error, nil once answered.
func (r *Router) requestWhile(peer string, k kind, n int, payload []byte, attempts int, keep func() bool, last func(error)) {
	var try func(attempt int)
	try = func(attempt int) {
		r.request(peer, k, n, payload, func(_ []byte, err error) {
			if err != nil && attempt+1 < attempts && keep() {
				time.AfterFunc(50*time.Millisecond<<attempt, func() { try(attempt + 1) })
				return
			}
			last(err)
		})
	}
	try(0)
}
