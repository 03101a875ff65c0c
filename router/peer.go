package router

import (
	"sync/atomic"
	"time"

	"github.com/shardchat/shard/link"
)

// handlePeer serves one request from another node. It runs on that link's
// reader and never blocks: slow work answers later through reply.
func (r *Router) handlePeer(from link.Peer, lk link.Kind, p []byte, reply func([]byte)) {
	k := kind(lk)
	// Every request is answered exactly once (the Handler's contract), so
	// it is counted as answered here rather than by wrapping reply, which
	// would cost an allocation per request.
	r.m.PeerReplies.WithLabelValues(k.String()).Inc()
	switch k {
	case kindForward:
		f, err := decodeForward(p)
		if err != nil {
			r.log.Warn("bad forward from peer", "peer", from.Name, "err", err)
			reply(nil)
			return
		}
		var got, refused int
		if f.mode == forwardDirect {
			got, refused = r.deliverDirect(f.a, f.b, nil, f.frame, f.copy)
		} else {
			got = r.deliverRoom(f.a, f.seq, nil, f.frame)
		}
		reply(appendDelivered(nil, got, refused))
	case kindLookup:
		d := link.NewDecoder(p)
		flags := d.Byte()
		key := decodeKey(&d)
		version := d.String()
		if d.Done() != nil {
			r.log.Warn("bad lookup from peer", "peer", from.Name)
			reply(nil)
			return
		}
		if r.view.Load().ring.Owner(key.Name) != r.cfg.Self {
			reply(appendLocations(nil, lookupNotOwner, nil))
			return
		}
		watcher, until := "", time.Time{}
		if flags&lookupWatch != 0 {
			watcher, until = from.Name, time.Now().Add(r.cfg.CacheTTL+watchSlack)
		}
		locs, err := r.lookupOwned(key, watcher, until, version)
		if err != nil {
			reply(appendLocations(nil, lookupUnsettled, nil))
			return
		}
		reply(appendLocations(nil, lookupKnown, locs))
	case kindRegister:
		regs, err := decodeRegistrations(p)
		if err != nil {
			r.log.Warn("bad register from peer", "peer", from.Name, "err", err)
			reply(nil)
			return
		}
		r.applyRegistrations(from, regs, func() { reply(nil) })
	case kindInvalidate:
		keys, err := decodeKeys(p)
		if err != nil {
			r.log.Warn("bad invalidate from peer", "peer", from.Name, "err", err)
		}
		for _, key := range keys {
			r.cache.invalidate(key)
		}
		reply(nil)
	case kindSynced:
		d := link.NewDecoder(p)
		version := d.String()
		if d.Done() != nil {
			r.log.Warn("bad synced from peer", "peer", from.Name)
		} else {
			r.settle.synced(version, from.Name)
		}
		reply(nil)
	case kindResync:
		reply(nil)
		r.wg.Add(1)
		go func() { // it waits for answers: not on the link's reader
			defer r.wg.Done()
			r.resync(from.Name)
		}()
	default:
		r.log.Warn("unknown request from peer", "peer", from.Name, "kind", k)
		reply(nil)
	}
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

// request sends one request, counted as n messages when it went out, to
// peer through the transport.
func (r *Router) request(peer string, k kind, n int, payload []byte, cb func([]byte, error)) {
	if r.links.Request(peer, link.Kind(k), payload, cb) {
		r.m.PeerSent.WithLabelValues(k.String()).Add(float64(n))
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
