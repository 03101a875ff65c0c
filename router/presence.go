package router

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/shardchat/shard/link"
	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/store"
)

func init() {
	handleFrames((*Router).handleWatch, protocol.TypeWatch)
	handleFrames((*Router).handleUnwatch, protocol.TypeUnwatch)
}

// Presence you are told about (docs/protocol.md §13). A connection watches users; each
// user's owner knows from its directory whether the user has a connection
// anywhere, and tells each node that watches the user once per change; that
// node hands the change to its own watching connections.
//
// A watch is a directory entry like a connection: the key {Watch, user}
// counts, per node, the connections that watch the user, at the user's own
// owner. So watches are re-registered with a new owner after every ring
// change, retried when a registration fails, dropped with a dead node and
// registered again after a partition, exactly as connections are
// (ringchange.go, retry.go); and a new owner's directory is settled for
// watches when it is for connections.
//
// The owner keeps, per watched user, the state it announced, and the
// version of it each watching node acknowledged. Whatever happened (a ring
// change, a node that restarted, a lost frame), it tells each watching node
// the state until that node has acknowledged it. A watching node passes a
// state on to its connections only when it differs from the one it was told
// before: a new owner telling it again what it knows costs a node-to-node
// message, never a frame to a client.

// offlineAfter is docs/protocol.md §13.2's: offline is announced once the user has had no
// connection for 3 s, so that a client reconnecting after a drain (a 1012,
// then a jittered backoff from 100 ms) does not flap.
const offlineAfter = 3 * time.Second

// maxNodeWatches bounds the watches (one connection watching one user) that
// one node's connections hold: a thousand connections at the default
// --max-watch, or 50,000 (--max-conns) watching 20 each. A watch costs the
// watching node about 100 bytes (its place in the connection's set and in
// the local index), so 100 MB at the bound.
const maxNodeWatches = 1_000_000

// presenceBatch bounds the users one presence frame to a node carries, as
// registerBatch bounds a register frame.
const presenceBatch = 1000

// presenceRetry is how long after a presence frame failed its users are
// told again, while the node it went to is still a member.
const presenceRetry = time.Second

// maxLastSeen bounds the users whose last close an owner keeps in memory:
// 100,000 of about 80 bytes, 8 MB; past it one is forgotten at random, and
// its last_seen comes from the store again, or is 0 without one
// (docs/protocol.md §13.2).
const maxLastSeen = 100000

// lastSeenQueue bounds the closes waiting to be written to the store, and
// lastSeenWriters the writes under way: a burst of 4096 closes (a node's
// users after it crashed) within the store's 5 s. Past it a close is not
// written: it is in the owner's memory, and the store keeps an older one.
const (
	lastSeenQueue   = 4096
	lastSeenWriters = 16
)

var errTooManyNodeWatches = &refused{protocol.CodeUnavailable, "this node holds the most watches it allows; retry on another node"}

func watchKey(user string) Key { return Key{Watch: true, Name: user} }

// The watching node's side.

// watchIndex is what the users this node's connections watch were last
// said to be by their owners, and how many watches those connections hold.
// Its lock comes before the index's and the connections'.
type watchIndex struct {
	mu    sync.Mutex
	known map[string]protocol.Presence // user -> what its owner told this node last
	// doubts are users believed online here whose owner said offline
	// without knowing since when (presenceState.uncertain): believed
	// offline only once offlineAfter has passed without word of online.
	doubts map[string]*doubt
	count  int // watches of this node's connections
}

type doubt struct {
	state protocol.Presence
	timer *time.Timer
}

// handleWatch records the connection as a watcher of the users at their
// owners, one register frame per owner, and answers ok; then each user's
// state follows, at once where this node knows it, else as soon as the
// owner tells it.
func (r *Router) handleWatch(c *client, f *protocol.Frame, answer func(result)) {
	users := distinct(f.UserItems())
	r.watches.mu.Lock()
	c.mu.Lock()
	var fresh []string
	for _, u := range users {
		if _, ok := c.watches[u]; !ok {
			fresh = append(fresh, u)
		}
	}
	switch {
	case len(c.watches)+len(fresh) > r.cfg.MaxWatch:
		c.mu.Unlock()
		r.watches.mu.Unlock()
		answer(result{err: &refused{protocol.CodeBadRequest,
			fmt.Sprintf("a connection watches at most %d users (--max-watch); unwatch some first", r.cfg.MaxWatch)}})
		return
	case r.watches.count+len(fresh) > maxNodeWatches:
		c.mu.Unlock()
		r.watches.mu.Unlock()
		answer(result{err: errTooManyNodeWatches})
		return
	}
	if c.watches == nil {
		c.watches = make(map[string]bool, len(fresh))
	}
	for _, u := range fresh {
		c.watches[u] = false // not told anything until answered
	}
	c.mu.Unlock()
	r.watches.count += len(fresh)
	r.m.Watches.Add(float64(len(fresh)))
	var registered <-chan error
	if len(fresh) > 0 {
		registered = r.updateLocalMany(watchKeys(fresh), c, true)
	}
	r.watches.mu.Unlock()
	if registered != nil {
		if err := <-registered; err != nil {
			r.unwatch(c, fresh) // the owners that recorded it hear so again
			answer(result{err: err})
			return
		}
	}
	answer(result{status: protocol.StatusOK})
	r.startWatches(c, users)
}

// distinct returns users without repeats, each its own copy: kept for the
// life of a watch, the frame's strings would keep its whole payload alive.
func distinct(users []string) []string {
	seen := make(map[string]bool, len(users))
	out := make([]string, 0, len(users))
	for _, u := range users {
		if !seen[u] {
			seen[u] = true
			out = append(out, strings.Clone(u))
		}
	}
	return out
}

func watchKeys(users []string) []Key {
	keys := make([]Key, len(users))
	for i, u := range users {
		keys[i] = watchKey(u)
	}
	return keys
}

// startWatches makes c's watches of users answered: from now on their
// changes go to c, after the state this node knows now, which goes at once.
// A page at a time, each once c's queue is at most half full, as a sync
// does, so that a thousand states at once do not cut a connection whose
// queue is shorter. A change is handed out under the same lock, so c never
// gets an older state after a newer.
func (r *Router) startWatches(c *client, users []string) {
	for len(users) > 0 {
		n := min(len(users), pageSize(c))
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		_ = c.WaitQueue(ctx, c.QueueLimit()/2) // past it, the queue's own bound decides
		cancel()
		var frames [][]byte
		r.watches.mu.Lock()
		c.mu.Lock()
		for _, u := range users[:n] {
			if _, ok := c.watches[u]; !ok {
				continue // unwatched, or closed, meanwhile
			}
			c.watches[u] = true
			if p, ok := r.watches.known[u]; ok {
				frames = append(frames, protocol.AppendPresence(nil, &p))
			}
		}
		c.mu.Unlock()
		if len(frames) > 0 && c.Queue(frames...) {
			r.m.PresenceEvents.WithLabelValues("connection").Add(float64(len(frames)))
		}
		r.watches.mu.Unlock()
		users = users[n:]
	}
}

// handleUnwatch stops the users' presence going to the connection at once,
// and answers once their owners have recorded it; `unavailable` means one
// has not been told yet: the retries go on telling it, and the connection
// gets nothing more of those users all the same.
func (r *Router) handleUnwatch(c *client, f *protocol.Frame, answer func(result)) {
	if err := <-r.unwatch(c, distinct(f.UserItems())); err != nil {
		answer(result{err: err})
		return
	}
	answer(result{status: protocol.StatusOK})
}

// unwatchAll ends every watch of a connection that closed.
func (r *Router) unwatchAll(c *client) {
	c.mu.Lock()
	users := make([]string, 0, len(c.watches))
	for u := range c.watches {
		users = append(users, u)
	}
	c.mu.Unlock()
	r.unwatch(c, users)
}

// unwatch ends c's watches of those of users it holds, and forgets what
// this node was told of a user no connection here watches any more. The
// channel gets the owners' answer.
func (r *Router) unwatch(c *client, users []string) <-chan error {
	r.watches.mu.Lock()
	defer r.watches.mu.Unlock()
	c.mu.Lock()
	var gone []string
	for _, u := range users {
		if _, ok := c.watches[u]; ok {
			delete(c.watches, u)
			gone = append(gone, u)
		}
	}
	c.mu.Unlock()
	if len(gone) == 0 {
		done := make(chan error, 1)
		done <- nil
		return done
	}
	r.watches.count -= len(gone)
	r.m.Watches.Sub(float64(len(gone)))
	done := r.updateLocalMany(watchKeys(gone), c, false)
	r.local.mu.RLock()
	for _, u := range gone {
		if len(r.local.conns[watchKey(u)]) == 0 {
			// Its owner tells this node afresh when a connection here
			// watches the user again.
			delete(r.watches.known, u)
			r.watches.dropDoubtLocked(u)
		}
	}
	r.local.mu.RUnlock()
	return done
}

func (w *watchIndex) dropDoubtLocked(user string) {
	if d := w.doubts[user]; d != nil {
		d.timer.Stop()
		delete(w.doubts, user)
	}
}

// watchAnswered reports whether presence of user goes to c.
func (c *client) watchAnswered(user string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.watches[user]
}

// presenceState is a user's state as its owner tells it. uncertain: the
// user is offline, but the owner never saw its last connection close (it
// has just come to own the user, or restarted), so it cannot tell whether
// that was 3 s ago: a node that believes the user online believes
// otherwise only once offlineAfter has passed without word of online, so
// that a user reconnecting after a drain does not flap. Nodes that believe
// nothing yet take it at once.
type presenceState struct {
	protocol.Presence
	uncertain bool
}

// applyPresence takes the states an owner tells this node: each that
// differs from the one this node was told before goes, encoded once, to the
// connections here that watch its user.
func (r *Router) applyPresence(states []presenceState) {
	w := &r.watches
	w.mu.Lock()
	defer w.mu.Unlock()
	r.local.mu.RLock()
	defer r.local.mu.RUnlock()
	sent := 0
	for _, s := range states {
		if len(r.local.conns[watchKey(s.User)]) == 0 {
			continue // no longer watched here: the owner hears so from the unregistration
		}
		old, ok := w.known[s.User]
		if s.uncertain && ok && old.Online {
			if w.doubts[s.User] == nil {
				if w.doubts == nil {
					w.doubts = make(map[string]*doubt)
				}
				d := &doubt{state: s.Presence}
				d.timer = time.AfterFunc(offlineAfter, func() { r.resolveDoubt(s.User, d) })
				w.doubts[s.User] = d
			}
			continue
		}
		w.dropDoubtLocked(s.User)
		if ok && old.Online == s.Online {
			continue // told again, by a new owner, or after a lost acknowledgement
		}
		sent += r.publishLocked(s.Presence)
	}
	if sent > 0 {
		r.m.PresenceEvents.WithLabelValues("connection").Add(float64(sent))
	}
}

// resolveDoubt believes d's offline once nothing has dispelled it.
func (r *Router) resolveDoubt(user string, d *doubt) {
	w := &r.watches
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.doubts[user] != d {
		return
	}
	delete(w.doubts, user)
	r.local.mu.RLock()
	defer r.local.mu.RUnlock()
	if n := r.publishLocked(d.state); n > 0 {
		r.m.PresenceEvents.WithLabelValues("connection").Add(float64(n))
	}
}

// publishLocked makes p what this node believes of its user and hands it
// to the answered watchers here; the caller holds the watch index's lock
// and the local index's read lock. It returns how many took it.
func (r *Router) publishLocked(p protocol.Presence) int {
	w := &r.watches
	if w.known == nil {
		w.known = make(map[string]protocol.Presence)
	}
	w.known[p.User] = p
	frame := protocol.AppendPresence(make([]byte, 0, 64+len(p.User)), &p)
	sent := 0
	for _, c := range r.local.conns[watchKey(p.User)] {
		if c.watchAnswered(p.User) && c.Queue(frame) {
			sent++
		}
	}
	return sent
}

func init() { servePeer(kindPresence, "presence", (*Router).servePresence) }

// servePresence takes the states a users' owner tells this node.
func (r *Router) servePresence(from link.Peer, p []byte, reply func([]byte)) {
	states, err := decodePresences(p)
	if err != nil {
		r.log.Warn("bad presence from peer", "peer", from.Name, "err", err)
		reply(nil)
		return
	}
	r.applyPresence(states)
	reply(nil)
}

// Presence payloads: a count, then per user its name, its state (below)
// and last_seen.
const (
	presenceOffline          byte = 0
	presenceOnline           byte = 1
	presenceOfflineUncertain byte = 2
)

func appendPresences(b []byte, updates []presenceUpdate) []byte {
	b = binary.AppendUvarint(b, uint64(len(updates)))
	for _, u := range updates {
		b = link.AppendString(b, u.state.User)
		switch {
		case u.state.Online:
			b = append(b, presenceOnline)
		case u.state.uncertain:
			b = append(b, presenceOfflineUncertain)
		default:
			b = append(b, presenceOffline)
		}
		b = binary.AppendUvarint(b, uint64(u.state.LastSeen))
	}
	return b
}

func decodePresences(p []byte) ([]presenceState, error) {
	d := link.NewDecoder(p)
	n := d.Count()
	states := make([]presenceState, 0, n)
	for i := 0; i < n && d.Err() == nil; i++ {
		s := presenceState{Presence: protocol.Presence{User: d.String()}}
		switch d.Byte() {
		case presenceOffline:
		case presenceOnline:
			s.Online = true
		case presenceOfflineUncertain:
			s.uncertain = true
		default:
			d.Fail()
		}
		s.LastSeen = int64(d.Uvarint() & protocol.MaxOffset)
		if !protocol.ValidID(s.User) {
			d.Fail()
		}
		states = append(states, s)
	}
	return states, d.Done()
}

// The owner's side.

// presenceBook is what an owner knows of the presence of its users that
// are watched. Its lock comes after the directory's (which calls
// observePresence); nothing that holds it calls the directory or a peer.
type presenceBook struct {
	mu    sync.Mutex
	users map[string]*presenceEntry
	dirty map[string]struct{} // users to look at again
	wake  chan struct{}
	epoch uint64 // numbers the watching nodes' registrations, see toldNode
	// lastSeen is when each user's last connection closed (ms), as this
	// owner saw it: see recordLastSeen. Records of users it stops owning
	// go, so a record says it has owned the user since.
	lastSeen map[string]int64
	// writes are the closes on their way to the store (lastSeenLoop).
	writes chan lastSeenWrite
	// reads are the users whose last_seen is to be read from the store,
	// reading whether a read is under way (readLastSeen).
	reads   map[string]struct{}
	reading bool
}

type lastSeenWrite struct {
	user string
	ms   int64
}

// presenceEntry is one watched user at its owner.
type presenceEntry struct {
	known     bool // a state was announced
	online    bool
	lastSeen  int64
	uncertain bool // offline, since when not known: see presenceState
	// stored is the user's last_seen as the store has it, read once for a
	// user whose close this owner did not see (storedRead). It only
	// numbers last_seen: it does not say the user has been gone since, as
	// the close of an owner that just left may not have reached the store.
	stored     int64
	storedRead bool
	version    uint64 // of the announced state: 1, 2, ...
	// zeroSince is since when the user has had no connection, as far as
	// this owner knows; zero while it has some, or when not known.
	zeroSince time.Time
	timer     *time.Timer // looks again once offlineAfter has passed
	nodes     map[string]*toldNode
}

// toldNode is what one watching node was told of one user. Its epoch
// changes when the node registers its watch afresh (it then knows nothing),
// so that an acknowledgement of what it was told before no longer counts.
type toldNode struct {
	epoch   uint64
	told    uint64 // the version it acknowledged; 0: none
	sending uint64 // the version on its way; 0: none
}

// presenceUpdate is one state on its way to one node.
type presenceUpdate struct {
	state   presenceState
	version uint64
	epoch   uint64
}

func (e *presenceEntry) set(online bool, lastSeen int64, uncertain bool) {
	if e.known && e.online == online {
		return
	}
	e.known, e.online, e.lastSeen, e.uncertain = true, online, lastSeen, uncertain
	e.version++
}

func (e *presenceEntry) stopTimer() {
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
}

// wakeLocked returns the channel that wakes the presence loop.
func (b *presenceBook) wakeLocked() chan struct{} {
	if b.wake == nil {
		b.wake = make(chan struct{}, 1)
	}
	return b.wake
}

// markLocked makes the presence loop look at user again.
func (b *presenceBook) markLocked(user string) {
	if b.dirty == nil {
		b.dirty = make(map[string]struct{})
	}
	b.dirty[user] = struct{}{}
	select {
	case b.wakeLocked() <- struct{}{}:
	default:
	}
}

func (r *Router) markPresence(users ...string) {
	r.presence.mu.Lock()
	defer r.presence.mu.Unlock()
	for _, u := range users {
		r.presence.markLocked(u)
	}
}

// recordLastSeen keeps when user's last connection closed, in memory at
// the owner, and queues it for the store when there is one: this runs
// under the directory's lock, lastSeenLoop writes.
func (r *Router) recordLastSeen(user string, ms int64) {
	b := &r.presence
	if r.cfg.Store != nil {
		select {
		case b.writesLocked() <- lastSeenWrite{user, ms}:
		default:
			r.log.Warn("last seen not stored: queue full", "user", user)
		}
	}
	if b.lastSeen == nil {
		b.lastSeen = make(map[string]int64)
	}
	if _, ok := b.lastSeen[user]; !ok && len(b.lastSeen) >= maxLastSeen {
		for u := range b.lastSeen { // forget one at random
			delete(b.lastSeen, u)
			break
		}
	}
	b.lastSeen[user] = ms
}

// lastSeenOf is when user's last connection closed, and whether this node
// saw it.
func (b *presenceBook) lastSeenOf(user string) (int64, bool) {
	ms, ok := b.lastSeen[user]
	return ms, ok
}

// writesLocked returns the queue of closes for the store.
func (b *presenceBook) writesLocked() chan lastSeenWrite {
	if b.writes == nil {
		b.writes = make(chan lastSeenWrite, lastSeenQueue)
	}
	return b.writes
}

// lastSeenLoop writes the closes recordLastSeen queued to the store, at
// most lastSeenWriters at once.
func (r *Router) lastSeenLoop() {
	r.presence.mu.Lock()
	writes := r.presence.writesLocked()
	r.presence.mu.Unlock()
	storeWriters(r, writes, lastSeenWriters, func(ctx context.Context, w lastSeenWrite) {
		if err := r.cfg.Store.SetLastSeen(ctx, w.user, w.ms); err != nil {
			r.log.Warn("last seen not stored", "user", w.user, "err", err)
		}
	})
}

// readLastSeenLocked starts a read from the store of the last_seen of the
// users queued for one, store.MaxLastSeenUsers at a time, unless one is
// under way; each read user is looked at again.
func (r *Router) readLastSeenLocked() {
	b := &r.presence
	if b.reading || len(b.reads) == 0 {
		return
	}
	users := make([]string, 0, min(len(b.reads), store.MaxLastSeenUsers))
	for u := range b.reads {
		if len(users) == cap(users) {
			break
		}
		users = append(users, u)
		delete(b.reads, u)
	}
	b.reading = true
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		seen, err := r.cfg.Store.LastSeen(ctx, users...)
		cancel()
		if err != nil {
			// Offline is said all the same, without a last_seen: presence
			// does not wait for a store that cannot answer.
			r.log.Warn("last seen not read", "users", len(users), "err", err)
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		b.reading = false
		for _, u := range users {
			if e := b.users[u]; e != nil {
				e.stored, e.storedRead = seen[u], true
			}
			b.markLocked(u)
		}
		r.readLastSeenLocked()
	}()
}

// observePresence is the directory's observer: a user's count that goes to
// 0 or from 0, and any change of who watches a user, make the presence
// loop look at that user. It runs under the directory's lock.
func (r *Router) observePresence(c dirChange) {
	if c.key.Room {
		return
	}
	b := &r.presence
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.users[c.key.Name]
	if c.key.Watch {
		if t := e.node(c.node); t != nil && c.fresh {
			b.epoch++
			*t = toldNode{epoch: b.epoch}
		}
		b.markLocked(c.key.Name)
		return
	}
	if (c.was == 0) == (c.now == 0) {
		return
	}
	now := time.Now()
	if c.now == 0 {
		r.recordLastSeen(c.key.Name, now.UnixMilli())
	}
	if e != nil {
		e.zeroSince = time.Time{}
		if c.now == 0 {
			e.zeroSince = now
		}
		b.markLocked(c.key.Name)
	}
}

// node is what node was told, nil for an entry or a node not known.
func (e *presenceEntry) node(name string) *toldNode {
	if e == nil {
		return nil
	}
	return e.nodes[name]
}

// presenceMembersChanged forgets the users this node no longer owns, and
// once the new ring is settled (every member re-registered its connections
// and watches, or settleTimeout passed) looks at every watched user it owns.
func (r *Router) presenceMembersChanged(nv *view) {
	self := r.cfg.Self
	b := &r.presence
	b.mu.Lock()
	for u, e := range b.users {
		if nv.ring.Owner(u) != self {
			e.stopTimer()
			delete(b.users, u)
		}
	}
	for u := range b.lastSeen {
		if nv.ring.Owner(u) != self {
			// Should it come back, its closes meanwhile went elsewhere.
			delete(b.lastSeen, u)
		}
	}
	b.mu.Unlock()
	version, settled, deadline := r.settle.wait()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		select {
		case <-settled:
		case <-t.C:
		case <-r.stop:
			return
		}
		v := r.view.Load()
		if v.version != version {
			return // a later change looks for itself
		}
		keys := r.dir.Keys(func(k Key) bool { return k.Watch && v.ring.Owner(k.Name) == self })
		b.mu.Lock()
		for _, k := range keys {
			b.markLocked(k.Name)
		}
		for u := range b.users {
			b.markLocked(u)
		}
		b.mu.Unlock()
	}()
}

// presenceLoop looks at the users marked, one batch at a time, and tells
// the watching nodes what changed: one frame per node per batch.
func (r *Router) presenceLoop() {
	defer r.wg.Done()
	if r.cfg.Store != nil {
		r.wg.Add(1) // this loop is counted still: Close has not passed Wait
		go r.lastSeenLoop()
	}
	r.presence.mu.Lock()
	wake := r.presence.wakeLocked()
	r.presence.mu.Unlock()
	for {
		select {
		case <-r.stop:
			return
		case <-wake:
		}
		r.presence.mu.Lock()
		dirty := r.presence.dirty
		r.presence.dirty = nil
		r.presence.mu.Unlock()
		batches := make(map[string][]presenceUpdate)
		v, now := r.view.Load(), time.Now()
		settled := r.settle.settled(v.version, now)
		for u := range dirty {
			r.lookAt(u, v, settled, now, batches)
		}
		for node, updates := range batches {
			r.tellPresence(node, updates)
		}
	}
}

// lookAt is lookAtLocked with user's counts read from the directory first,
// before taking the book's lock, which comes after the directory's; a
// change meanwhile marks user again.
func (r *Router) lookAt(user string, v *view, settled bool, now time.Time, batches map[string][]presenceUpdate) {
	total := 0
	for _, l := range r.dir.Holders(Key{Name: user}) {
		total += l.Count
	}
	watchers := r.dir.Holders(watchKey(user))
	r.presence.mu.Lock()
	r.lookAtLocked(user, v, total, watchers, settled, now, batches)
	r.presence.mu.Unlock()
}

// lookAtLocked decides what user is now, by its count over all nodes, and
// adds its state to the batch of each watching node that was not told it.
func (r *Router) lookAtLocked(user string, v *view, total int, watchers []Location, settled bool, now time.Time, batches map[string][]presenceUpdate) {
	b := &r.presence
	e := b.users[user]
	if v.ring.Owner(user) != r.cfg.Self || len(watchers) == 0 {
		if e != nil {
			e.stopTimer()
			delete(b.users, user)
		}
		return
	}
	if e == nil {
		e = &presenceEntry{nodes: make(map[string]*toldNode)}
		if b.users == nil {
			b.users = make(map[string]*presenceEntry)
		}
		b.users[user] = e
	}
	lastSeen, sawClose := b.lastSeenOf(user)
	if e.zeroSince.IsZero() && sawClose {
		e.zeroSince = time.UnixMilli(lastSeen)
	}
	switch {
	case total > 0:
		e.stopTimer()
		e.zeroSince = time.Time{}
		e.set(true, 0, false)
	case !settled:
		// A registration of its connections may be on its way to this new
		// owner: decided once the ring is settled, which looks again.
		return
	case e.zeroSince.IsZero():
		// It never closed a connection here: offline since before this
		// node owned it, when, it cannot tell. Said at once, and said so,
		// with the last_seen the store has, once read.
		if r.cfg.Store != nil && !e.storedRead {
			if b.reads == nil {
				b.reads = make(map[string]struct{})
			}
			b.reads[user] = struct{}{}
			r.readLastSeenLocked()
			return
		}
		e.set(false, e.stored, true)
	default:
		if wait := e.zeroSince.Add(offlineAfter).Sub(now); wait > 0 {
			// Set for this close: a timer set for an earlier one (the user
			// came back and left again meanwhile) may have fired already,
			// or would fire too soon.
			if e.timer == nil {
				e.timer = time.AfterFunc(wait, func() { r.markPresence(user) })
			} else {
				e.timer.Reset(wait)
			}
			// Online until the 3 s have passed (§13.2), also to a
			// watcher that comes meanwhile.
			e.set(true, 0, false)
			break
		}
		e.stopTimer()
		e.set(false, lastSeen, false)
	}
	state := presenceState{protocol.Presence{User: user, Online: e.online, LastSeen: e.lastSeen}, e.uncertain}
	watching := make(map[string]bool, len(watchers))
	for _, w := range watchers {
		watching[w.Node] = true
		t := e.nodes[w.Node]
		if t == nil {
			b.epoch++
			t = &toldNode{epoch: b.epoch}
			e.nodes[w.Node] = t
		}
		if t.told == e.version || t.sending == e.version {
			continue
		}
		t.sending = e.version
		batches[w.Node] = append(batches[w.Node], presenceUpdate{state, e.version, t.epoch})
	}
	for n := range e.nodes {
		if !watching[n] {
			delete(e.nodes, n)
		}
	}
}

// tellPresence sends updates to node, presenceBatch per frame, or hands
// them to this node's watchers when node is this one.
func (r *Router) tellPresence(node string, updates []presenceUpdate) {
	for len(updates) > 0 {
		part := updates[:min(len(updates), presenceBatch)]
		updates = updates[len(part):]
		if node == r.cfg.Self {
			states := make([]presenceState, len(part))
			for i, u := range part {
				states[i] = u.state
			}
			r.applyPresence(states)
			r.presenceTold(node, part, nil)
			continue
		}
		r.request(node, kindPresence, len(part), appendPresences(nil, part), func(_ []byte, err error) {
			r.presenceTold(node, part, err)
		})
	}
}

// presenceTold records node's answer to updates. What failed is told again
// after presenceRetry, while node is a member: a node that is gone leaves
// the directory, and so the watchers, with its membership.
func (r *Router) presenceTold(node string, updates []presenceUpdate, err error) {
	b := &r.presence
	b.mu.Lock()
	var again []string
	for _, u := range updates {
		t := b.users[u.state.User].node(node)
		if t == nil || t.epoch != u.epoch {
			continue
		}
		if t.sending == u.version {
			t.sending = 0
		}
		if err != nil {
			again = append(again, u.state.User)
		} else if u.version > t.told {
			t.told = u.version
		}
	}
	b.mu.Unlock()
	if err == nil {
		if node != r.cfg.Self {
			r.m.PresenceEvents.WithLabelValues("node").Add(float64(len(updates)))
		}
		return
	}
	r.log.Debug("presence not told", "peer", node, "users", len(updates), "err", err)
	if len(again) > 0 && r.view.Load().inc[node] != "" {
		time.AfterFunc(presenceRetry, func() { r.markPresence(again...) })
	}
}
