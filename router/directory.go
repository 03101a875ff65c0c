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
	// absent are the watchers of keys with no connection, for group
	// deliveries (WatchAbsent): node -> when its cached empty answer
	// expires. At most maxAbsent keys.
	absent map[Key]map[string]time.Time
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

// newDirectory makes a directory that tells observe, when not nil, of
// every change of a count.
func newDirectory(observe func(dirChange)) *Directory {
	return &Directory{entries: make(map[Key]*dirEntry), absent: make(map[Key]map[string]time.Time), observe: observe}
}

// maxAbsent bounds the keys with no connection that an owner watches: a
// group's members who are away, so that each message to the group need not
// ask where they are. 100,000 keys of one or a few watchers is about 20 MB;
// past it an empty answer is neither watched nor cached, as for a direct
// send, and the sender asks again next time.
const maxAbsent = 100000

// WatchAbsent makes watcher, which was just answered that no node holds
// key, cache that answer until watchUntil, and be told of key's first
// connection: unless a connection registered meanwhile (then it returns
// the nodes holding key, watched as by Lookup) or maxAbsent keys are
// watched already (then watched is false). Only group deliveries ask it
// (lookup_users): their users are a group's members, not names a client
// sends to.
func (d *Directory) WatchAbsent(key Key, watcher string, watchUntil time.Time) (locs []Location, watched bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e := d.entries[key]; e != nil && len(e.counts) > 0 {
		return d.lookupLocked(e, watcher, watchUntil), true
	}
	ws, ok := d.absent[key]
	if !ok {
		if len(d.absent) >= maxAbsent {
			return nil, false
		}
		ws = make(map[string]time.Time, 1)
		d.absent[key] = ws
	}
	ws[watcher] = watchUntil
	return nil, true
}

// total is the key's count over all nodes.
func (e *dirEntry) total() int {
	n := 0
	for _, h := range e.counts {
		n += h.count
	}
	return n
}

func (d *Directory) notify(c dirChange) {
	if d.observe != nil {
		d.observe(c)
	}
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
	return d.lookupLocked(e, watcher, watchUntil)
}

// lookupLocked is Lookup of e, a key with connections; the caller holds d.mu.
func (d *Directory) lookupLocked(e *dirEntry, watcher string, watchUntil time.Time) []Location {
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
	old, ok := e.counts[node]
	if ok == (count > 0) && old.count == count && old.inc == inc {
		return nil
	}
	was := e.total()
	if count == 0 {
		delete(e.counts, node)
	} else {
		if e.counts == nil {
			e.counts = make(map[string]holding)
		}
		e.counts[node] = holding{count, inc}
	}
	if ok || count > 0 {
		d.notify(dirChange{key: key, node: node, fresh: count > 0 && (!ok || old.inc != inc), was: was, now: e.total()})
	}
	var tell []string
	for w, until := range e.watchers {
		if w != node && now.Before(until) {
			tell = append(tell, w)
		}
	}
	e.watchers = nil
	if count > 0 { // its first connection: those told it had none hear of it
		for w, until := range d.absent[key] {
			if w != node && now.Before(until) {
				tell = append(tell, w)
			}
		}
		delete(d.absent, key)
	}
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
				was := e.total()
				delete(e.counts, node)
				d.notify(dirChange{key: key, node: node, was: was, now: e.total()})
			}
		}
		for node := range e.watchers {
			if !keep(node, "") {
				delete(e.watchers, node)
			}
		}
		d.tidy(key, e, owns, now)
	}
	d.tidyAbsent(func(node string, _ time.Time) bool { return !keep(node, "") }, owns)
}

// Sweep forgets expired watchers (of absent keys too), entries left with
// nothing, and, after strayGrace, the keys this node does not own.
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
	d.tidyAbsent(func(_ string, until time.Time) bool { return now.After(until) }, owns)
}

// tidyAbsent drops the watchers of absent keys that drop says, and the
// keys left with none or that this node does not own; the caller holds d.mu.
func (d *Directory) tidyAbsent(drop func(node string, until time.Time) bool, owns func(Key) bool) {
	for key, ws := range d.absent {
		for node, until := range ws {
			if drop(node, until) {
				delete(ws, node)
			}
		}
		if len(ws) == 0 || !owns(key) {
			delete(d.absent, key)
		}
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

// Len is the number of keys with an entry.
func (d *Directory) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.entries)
}
