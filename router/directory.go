package router

import (
	"sort"
	"sync"
	"time"
)

// Directory is what an owner node knows of the keys it owns: how many
// connections each node holds, and which nodes cache that answer and must
// be told when it changes. It is soft state: holders re-register after
// every ring change.
type Directory struct {
	mu      sync.Mutex
	entries map[Key]*dirEntry
}

type dirEntry struct {
	counts   map[string]holding   // node -> its connections of this key
	watchers map[string]time.Time // node -> when its cached answer expires
	// strayFrom is when this node was first found not owning the key since
	// its last registration; zero while it owns it.
	strayFrom time.Time
}

// strayGrace is how long the counts of a key this node does not own are
// kept after its last registration. A holder whose ring is ahead registers
// with a key's new owner before the owner's own ring has changed (a
// draining node always is: it learns first that it left), and the owner
// may apply another change before that one; rings agree again within
// seconds.
const strayGrace = 10 * time.Second

// keepStray reports whether e, whose key this node does not own on its
// ring, is kept for now.
func (e *dirEntry) keepStray(now time.Time) bool {
	if len(e.counts) == 0 {
		return false
	}
	if e.strayFrom.IsZero() {
		e.strayFrom = now
	}
	return now.Sub(e.strayFrom) < strayGrace
}

// holding is one node's count for a key, with the incarnation of the process
// that registered it: a restarted node's former self is told apart.
type holding struct {
	count int
	inc   string
}

func newDirectory() *Directory {
	return &Directory{entries: make(map[Key]*dirEntry)}
}

// Lookup returns the nodes holding key, sorted by name. When watcher is
// set and some node holds key, that node caches the answer until
// watchUntil and is told of changes. An empty answer is never watched, nor
// cached by the asker (locationCache.finish): a key with no connection gets
// no entry here, so that sends to users who never connected, of which a
// client can make up any number, leave nothing behind. The asker asks again
// next time, and finds a connection registered meanwhile.
func (d *Directory) Lookup(key Key, watcher string, watchUntil time.Time) []Location {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.entries[key]
	if e == nil || len(e.counts) == 0 {
		return nil
	}
	if watcher != "" {
		if e.watchers == nil {
			e.watchers = make(map[string]time.Time)
		}
		e.watchers[watcher] = watchUntil
	}
	locs := make([]Location, 0, len(e.counts))
	for node, h := range e.counts {
		locs = append(locs, Location{Node: node, Count: h.count})
	}
	sort.Slice(locs, func(i, j int) bool { return locs[i].Node < locs[j].Node })
	return locs
}

// Set records that node (incarnation inc) holds count connections of key
// and returns the watchers to tell, other than node itself. They are
// forgotten: their next lookup watches again.
func (d *Directory) Set(key Key, node, inc string, count int, now time.Time) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.entries[key]
	if e == nil {
		if count == 0 {
			return nil
		}
		e = &dirEntry{}
		d.entries[key] = e
	}
	e.strayFrom = time.Time{} // the holder says we own it: a new grace
	if old, ok := e.counts[node]; ok == (count > 0) && old.count == count && old.inc == inc {
		return nil
	}
	if count == 0 {
		delete(e.counts, node)
	} else {
		if e.counts == nil {
			e.counts = make(map[string]holding)
		}
		e.counts[node] = holding{count, inc}
	}
	var tell []string
	for w, until := range e.watchers {
		if w != node && now.Before(until) {
			tell = append(tell, w)
		}
	}
	e.watchers = nil
	if len(e.counts) == 0 {
		delete(d.entries, key)
	}
	return tell
}

// Retain drops what a membership change made wrong: the counts of holders
// that keep refuses (gone, or a former incarnation), watchers that are no
// longer members, the keys this node owned (owned) and no longer owns
// (owns), and, after strayGrace, the keys it does not own. A key that moved
// away goes at once: its holders register with its new owner, and would not
// tell this node of a close, so counts kept here could come back stale were
// the key to return.
func (d *Directory) Retain(keep func(node, inc string) bool, owned, owns func(Key) bool, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for key, e := range d.entries {
		if owned(key) && !owns(key) {
			delete(d.entries, key)
			continue
		}
		for node, h := range e.counts {
			if !keep(node, h.inc) {
				delete(e.counts, node)
			}
		}
		for node := range e.watchers {
			if !keep(node, "") {
				delete(e.watchers, node)
			}
		}
		d.tidy(key, e, owns, now)
	}
}

// Sweep forgets expired watchers, entries left with nothing, and, after
// strayGrace, the keys this node does not own.
func (d *Directory) Sweep(now time.Time, owns func(Key) bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for key, e := range d.entries {
		for node, until := range e.watchers {
			if now.After(until) {
				delete(e.watchers, node)
			}
		}
		d.tidy(key, e, owns, now)
	}
}

// tidy drops key's entry when it holds nothing, or when this node has
// not owned key for strayGrace; the caller holds d.mu.
func (d *Directory) tidy(key Key, e *dirEntry, owns func(Key) bool, now time.Time) {
	switch {
	case owns(key):
		e.strayFrom = time.Time{}
		if len(e.counts) == 0 && len(e.watchers) == 0 {
			delete(d.entries, key)
		}
	case !e.keepStray(now):
		delete(d.entries, key)
	}
}

// Len is the number of keys with an entry.
func (d *Directory) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.entries)
}
