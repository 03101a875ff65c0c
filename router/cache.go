package router

import (
	"sync"
	"time"

	"github.com/shardchat/shard/link"
)

// locationCache is the sender side: answers from owners, kept until the
// owner says they changed, the ring changes, or they expire.
type locationCache struct {
	mu      sync.Mutex
	entries map[Key]cached
	flights map[Key]*flight
	max     int
}

type cached struct {
	locs    []Location // shared, read-only
	expires time.Time
}

// flight is one lookup in progress; later senders of the same key wait for
// it instead of asking again.
type flight struct {
	done    chan struct{}
	locs    []Location
	err     error
	invalid bool // changed while in flight: use once, do not cache
}

func newLocationCache(max int) *locationCache {
	return &locationCache{entries: make(map[Key]cached), flights: make(map[Key]*flight), max: max}
}

// get returns a cached answer, or the flight to wait for, or a new flight
// that the caller must complete with finish.
func (c *locationCache) get(key Key, now time.Time) (locs []Location, hit bool, f *flight, leader bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok {
		if now.Before(e.expires) {
			return e.locs, true, nil, false
		}
		delete(c.entries, key)
	}
	if f := c.flights[key]; f != nil {
		return nil, false, f, false
	}
	f = &flight{done: make(chan struct{})}
	c.flights[key] = f
	return nil, false, f, true
}

// finish completes f with the owner's answer, and caches it when the owner
// watches it (cacheable) and nothing spoiled it meanwhile: an answer the
// owner does not watch (an empty one, while it watches too many keys no
// node holds: Directory.Lookup) would go stale without a word.
func (c *locationCache) finish(key Key, f *flight, locs []Location, err error, cacheable bool, expires time.Time) {
	c.mu.Lock()
	if c.flights[key] == f {
		delete(c.flights, key)
	}
	if err == nil && !f.invalid && cacheable {
		if len(c.entries) >= c.max {
			for k := range c.entries { // evict one at random
				delete(c.entries, k)
				break
			}
		}
		c.entries[key] = cached{locs: locs, expires: expires}
	}
	c.mu.Unlock()
	f.locs, f.err = locs, err
	close(f.done)
}

// invalidate drops key, and spoils a lookup of it still in flight.
func (c *locationCache) invalidate(key Key) {
	c.mu.Lock()
	delete(c.entries, key)
	if f := c.flights[key]; f != nil {
		f.invalid = true
	}
	c.mu.Unlock()
}

// reset drops everything: owners may have moved.
func (c *locationCache) reset() {
	c.mu.Lock()
	clear(c.entries)
	for _, f := range c.flights {
		f.invalid = true
	}
	c.mu.Unlock()
}

func (c *locationCache) sweep(now time.Time) {
	c.mu.Lock()
	for k, e := range c.entries {
		if now.After(e.expires) {
			delete(c.entries, k)
		}
	}
	c.mu.Unlock()
}

func (c *locationCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

func init() { servePeer(kindInvalidate, "invalidate", (*Router).serveInvalidate) }

// serveInvalidate drops cached answers an owner says changed.
func (r *Router) serveInvalidate(from link.Peer, p []byte, reply func([]byte)) {
	keys, err := decodeKeys(p)
	if err != nil {
		r.log.Warn("bad invalidate from peer", "peer", from.Name, "err", err)
	}
	for _, key := range keys {
		r.cache.invalidate(key)
	}
	reply(nil)
}
