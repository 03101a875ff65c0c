// Package router moves chat messages between client connections and nodes: it
// keeps the directories of the keys this node owns, asks owners where
// recipients are, and forwards each message once to each node that holds one.
// It never reads or writes a client socket itself: sessions do.
package router

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardchat/shard/link"
	"github.com/shardchat/shard/ring"
)

// Router is one node's routing state.
type Router struct {
	cfg   Config
	log   *slog.Logger
	m     *Metrics
	links Transport
	view  atomic.Pointer[view]
	dir   *Directory
	cache *locationCache
	local localIndex
	// members are the member lists of groups, by version (groups.go).
	members memberLists

	midPrefix string
	midSeq    atomic.Uint64

	membersMu   sync.Mutex        // serializes SetMembers
	retired     map[string]string // node -> its last former incarnation
	settle      settlement
	regsMu      sync.Mutex
	regsPending int           // registrations not yet answered
	regsIdle    chan struct{} // closed when regsPending drops to 0; made by WaitRegistrations
	answers     answers
	retry       retries
	keys        keyedSends
	watches     watchIndex   // presence.go: what this node's watching connections were told
	presence    presenceBook // presence.go: the presence of the users this node owns that are watched
	quota       *storeQuota

	stop chan struct{}
	wg   sync.WaitGroup
}

// New starts a router that talks to its peers through t, which it owns from
// now on: Close closes it.
func New(cfg Config, t Transport) *Router {
	cfg = cfg.withDefaults()
	var prefix [10]byte
	rand.Read(prefix[:])
	r := &Router{
		cfg:       cfg,
		log:       cfg.Logger,
		m:         cfg.Metrics,
		cache:     newLocationCache(cfg.CacheSize),
		local:     newLocalIndex(),
		midPrefix: base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(prefix[:]) + "-",
		retired:   make(map[string]string),
		quota:     newStoreQuota(cfg.StoreRate, cfg.StoreBurst),
		stop:      make(chan struct{}),
	}
	r.dir = newDirectory(r.observePresence)
	empty, _ := ring.New(nil)
	r.view.Store(newView(nil, empty))
	r.links = t
	t.Serve(r.handlePeer)
	r.wg.Add(2)
	go r.sweepLoop()
	go r.presenceLoop()
	if cfg.Store != nil {
		r.answers.kick = make(chan struct{}, 1)
		r.wg.Add(1)
		go r.recordLoop()
	}
	return r
}

// Close stops the links and the background work. The answers of sends
// that ended as the links closed are recorded last.
func (r *Router) Close() {
	close(r.stop)
	r.links.Close()
	r.wg.Wait()
	if r.cfg.Store != nil {
		r.recordAnswers()
	}
}

// Ring is the ring this node routes by now.
func (r *Router) Ring() *ring.Ring { return r.view.Load().ring }

// Sizes reports the router's bounded structures, for the metrics: frames
// queued on links, directory keys owned here, cached locations.
func (r *Router) Sizes() (linkQueued, directoryKeys, cachedLocations int) {
	return r.links.Queued(), r.dir.Len(), r.cache.len()
}

func (r *Router) self() link.Peer { return link.Peer{Name: r.cfg.Self, Inc: r.cfg.Incarnation} }

// WaitRegistrations waits until every registration sent so far has been
// answered, or ctx ends: a draining node's last unregistrations land first.
func (r *Router) WaitRegistrations(ctx context.Context) error {
	r.regsMu.Lock()
	if r.regsPending == 0 {
		r.regsMu.Unlock()
		return nil
	}
	if r.regsIdle == nil {
		r.regsIdle = make(chan struct{})
	}
	idle := r.regsIdle
	r.regsMu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// A WaitGroup does not fit here: registrations start at any time, also
// while a drain waits for them.
func (r *Router) registrationStarted() {
	r.regsMu.Lock()
	r.regsPending++
	r.regsMu.Unlock()
}

func (r *Router) registrationDone() {
	r.regsMu.Lock()
	r.regsPending--
	if r.regsPending == 0 && r.regsIdle != nil {
		close(r.regsIdle)
		r.regsIdle = nil
	}
	r.regsMu.Unlock()
}

func (r *Router) sweepLoop() {
	defer r.wg.Done()
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case now := <-t.C:
			r.sweepCaches(now)
		}
	}
}

func (r *Router) newMid() string {
	return r.midPrefix + strconv.FormatUint(r.midSeq.Add(1), 36)
}

// sweepCaches is run by the router's background loop.
func (r *Router) sweepCaches(now time.Time) {
	self, rg := r.cfg.Self, r.view.Load().ring
	r.dir.Sweep(now, func(k Key) bool { return rg.Owner(k.Name) == self })
	r.cache.sweep(now)
	r.quota.sweep(now)
}
