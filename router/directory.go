package router

import (
	"slices"
	"strings"
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
	// unknown are the watchers of keys no node holds and that have no
	// entry: a sender that looked one up caches that nobody holds it, and
	// must be told of its first connection. A client can make up any number of such keys, so there
	// are at most maxUnknown; past that an empty answer is not watched, and
	// its asker does not cache it.
	unknown    map[Key]watchers
	maxUnknown int
	// observe, when set, is told of every change of a holder's count, under
	// mu: it must be quick and must not call the directory.
	observe func(dirChange)
}

// A dirChange is one holder's count of a key changing: a registration, or
// a holder that is gone. A key that moves to another owner is not one.
type dirChange struct {
	key  Key
	node string
	// fresh: node holds some of key now and held none before, or held them
	// as another incarnation.
	fresh    bool
	was, now int // the key's count over all nodes, before and after
}

type dirEntry struct {
	counts   holders  // the nodes with connections of this key, by name
	watchers watchers // the nodes that cache an answer, by name
	// strayFrom is when this node was first found not owning the key since
	// its last registration, in nanoseconds since strayEpoch (an entry per
	// key is worth keeping small), odd; zero while it owns it.
	strayFrom int64
}

// strayGrace is how long the counts of a key this node does not own are
// kept after its last registration. A holder whose ring is ahead registers
// with a key's new owner before the owner's own ring has changed (a
// draining node always is: it learns first that it left), and the owner
// may apply another change before that one; rings agree again within
// seconds.
const strayGrace = 10 * time.Second

// strayEpoch is what strayFrom counts from: a time with the monotonic
// clock's reading, so that a grace is measured on that clock, as it would
// be between two whole time.Times, whatever the wall clock does meanwhile.
var strayEpoch = time.Now()

// keepStray reports whether e, whose key this node does not own on its
// ring, is kept for now.
func (e *dirEntry) keepStray(now time.Time) bool {
	if len(e.counts) == 0 {
		return false
	}
	if e.strayFrom == 0 {
		e.strayFrom = int64(now.Sub(strayEpoch)) | 1 // odd: never the zero of an owned key
	}
	return now.Sub(strayEpoch)-time.Duration(e.strayFrom) < strayGrace
}

// holding is one node's count for a key, with the incarnation of the process
// that registered it: a restarted node's former self is told apart.
type holding struct {
	count int
	inc   string
}

// holders are the nodes that hold some of a key, each with its holding,
// sorted by name. A slice, not a map: a key has one holder or a few (a
// user's devices, the nodes of a room's members), and a map of one costs
// its owner about 300 bytes a key more than a slice of one.
type holders []holderAt

type holderAt struct {
	node string
	holding
}

// find returns where node is, or where it would go, and whether it is.
func (hs holders) find(node string) (int, bool) {
	return slices.BinarySearchFunc(hs, node, func(h holderAt, node string) int { return strings.Compare(h.node, node) })
}

// watchers are the nodes that cache an answer about a key, each with when
// its cached answer expires, sorted by name: a slice, as holders are.
type watchers []watchAt

type watchAt struct {
	node  string
	until time.Time
}

// set records that node caches an answer until until.
func (ws watchers) set(node string, until time.Time) watchers {
	i, ok := slices.BinarySearchFunc(ws, node, func(w watchAt, node string) int { return strings.Compare(w.node, node) })
	if ok {
		ws[i].until = until
		return ws
	}
	return slices.Insert(ws, i, watchAt{node, until})
}

// drop removes the watchers that gone says are gone.
func (ws watchers) drop(gone func(watchAt) bool) watchers { return slices.DeleteFunc(ws, gone) }

// maxUnknownKeys bounds the keys no node holds that one owner watches for
// its askers: 65,536 keys, each with a watcher or a few, is about 10 MB;
// sends to users who never connected at a connection's rate limit (200/s)
// keep about 7,000 of them watched (35 s each).
const maxUnknownKeys = 1 << 16

// newDirectory makes a directory that tells observe, when not nil, of
// every change of a count.
func newDirectory(observe func(dirChange)) *Directory {
	return &Directory{entries: make(map[Key]*dirEntry), unknown: make(map[Key]watchers),
		maxUnknown: maxUnknownKeys, observe: observe}
}

// total is the key's count over all nodes.
func (e *dirEntry) total() int {
	n := 0
	for i := range e.counts {
		n += e.counts[i].count
	}
	return n
}

func (d *Directory) notify(c dirChange) {
	if d.observe != nil {
		d.observe(c)
	}
}

// Lookup returns the nodes holding key, sorted by name. When watcher is
// set, that node caches the answer until watchUntil and is told of changes;
// watched says whether it may: an empty answer is watched only while fewer
// than maxUnknown keys no node holds are, so that sends to made-up users
// cannot grow the directory without bound. The asker of an answer not
// watched asks again next time, and finds a connection registered
// meanwhile.
func (d *Directory) Lookup(key Key, watcher string, watchUntil time.Time) (locs []Location, watched bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.entries[key]
	if e == nil {
		if watcher == "" {
			return nil, false
		}
		// Watched apart from the entries, within the bound. A key with an
		// entry is watched there, held or not (its last holder may just
		// have gone), since Set tells the entry's watchers alone.
		w, ok := d.unknown[key]
		if !ok && len(d.unknown) >= d.maxUnknown {
			return nil, false
		}
		d.unknown[key] = w.set(watcher, watchUntil)
		return nil, true
	}
	if watcher != "" {
		e.watchers = e.watchers.set(watcher, watchUntil)
	}
	locs = make([]Location, len(e.counts)) // sorted by node, as the holders are
	for i, h := range e.counts {
		locs[i] = Location{Node: h.node, Count: h.count}
	}
	return locs, watcher != ""
}

// Holders returns the nodes holding key, sorted by name, watching nothing.
func (d *Directory) Holders(key Key) []Location {
	locs, _ := d.Lookup(key, "", time.Time{})
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
		// Those who cached that nobody holds key hear of its first holder.
		e = &dirEntry{watchers: d.unknown[key]}
		delete(d.unknown, key)
		d.entries[key] = e
	}
	e.strayFrom = 0 // the holder says we own it: a new grace
	i, ok := e.counts.find(node)
	var old holding
	if ok {
		old = e.counts[i].holding
	}
	if ok == (count > 0) && old.count == count && old.inc == inc {
		return nil
	}
	was := e.total()
	switch {
	case count == 0:
		if ok {
			e.counts = slices.Delete(e.counts, i, i+1)
		}
	case ok:
		e.counts[i].holding = holding{count, inc}
	default:
		e.counts = slices.Insert(e.counts, i, holderAt{node, holding{count, inc}})
	}
	if ok || count > 0 {
		d.notify(dirChange{key: key, node: node, fresh: count > 0 && (!ok || old.inc != inc), was: was, now: e.total()})
	}
	var tell []string
	for _, w := range e.watchers {
		if w.node != node && now.Before(w.until) {
			tell = append(tell, w.node)
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
// the key to return. It returns the holders whose counts of keys that moved
// away it dropped.
func (d *Directory) Retain(keep func(node, inc string) bool, owned, owns func(Key) bool, now time.Time) (movedAway map[string]bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	movedAway = make(map[string]bool)
	left := func(w watchAt) bool { return !keep(w.node, "") }
	for key, w := range d.unknown {
		if w = w.drop(left); len(w) == 0 || !owns(key) {
			delete(d.unknown, key) // a ring change resets the askers' caches
		} else {
			d.unknown[key] = w
		}
	}
	for key, e := range d.entries {
		if owned(key) && !owns(key) {
			for _, h := range e.counts {
				movedAway[h.node] = true
			}
			delete(d.entries, key)
			continue
		}
		for i := 0; i < len(e.counts); {
			h := e.counts[i]
			if keep(h.node, h.inc) {
				i++
				continue
			}
			was := e.total()
			e.counts = slices.Delete(e.counts, i, i+1)
			d.notify(dirChange{key: key, node: h.node, was: was, now: e.total()})
		}
		e.watchers = e.watchers.drop(left)
		d.tidy(key, e, owns, now)
	}
	return movedAway
}

// Sweep forgets expired watchers, entries left with nothing, and, after
// strayGrace, the keys this node does not own.
func (d *Directory) Sweep(now time.Time, owns func(Key) bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	expired := func(w watchAt) bool { return now.After(w.until) }
	for key, w := range d.unknown {
		if w = w.drop(expired); len(w) == 0 || !owns(key) {
			delete(d.unknown, key)
		} else {
			d.unknown[key] = w
		}
	}
	for key, e := range d.entries {
		e.watchers = e.watchers.drop(expired)
		d.tidy(key, e, owns, now)
	}
}

// tidy drops key's entry when it holds nothing, or when this node has
// not owned key for strayGrace; the caller holds d.mu.
func (d *Directory) tidy(key Key, e *dirEntry, owns func(Key) bool, now time.Time) {
	switch {
	case owns(key):
		e.strayFrom = 0
		if len(e.counts) == 0 && len(e.watchers) == 0 {
			delete(d.entries, key)
		}
	case !e.keepStray(now):
		delete(d.entries, key)
	}
}

// Keys returns the keys with an entry that match.
func (d *Directory) Keys(match func(Key) bool) []Key {
	d.mu.Lock()
	defer d.mu.Unlock()
	var keys []Key
	for k := range d.entries {
		if match(k) {
			keys = append(keys, k)
		}
	}
	return keys
}

// Len is the number of keys with an entry, those no node holds but some
// node watches included.
func (d *Directory) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.entries) + len(d.unknown)
}
