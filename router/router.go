// Package router moves chat messages between client connections and nodes: it
// keeps the directories of the keys this node owns, asks owners where
// recipients are, and forwards each message once to each node that holds one.
// It never reads or writes a client socket itself: sessions do.
package router

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardchat/shard/link"
	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/ring"
	"github.com/shardchat/shard/session"
	"github.com/shardchat/shard/store"
)

// Mode is how a node finds the nodes that hold a message's recipients.
type Mode int

const (
	// Owner asks the key's owner node (or a cached answer) and sends one
	// node-to-node message to each node that holds a recipient.
	Owner Mode = iota
	// Broadcast sends every message to every other node, as the design this
	// project replaces did. It exists only to measure the difference.
	Broadcast
)

// ParseMode reads the --routing flag.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "owner":
		return Owner, nil
	case "broadcast":
		return Broadcast, nil
	}
	return 0, fmt.Errorf("routing %q: want owner or broadcast", s)
}

func (m Mode) String() string {
	if m == Broadcast {
		return "broadcast"
	}
	return "owner"
}

// Config describes one node's router.
type Config struct {
	// Self is this node's name, as in the ring.
	Self string
	// Incarnation is random per process start; it travels in the link
	// hello so that owners tell this process from a former one.
	Incarnation string
	// Mode is owner (default) or broadcast routing.
	Mode Mode
	// CacheTTL bounds how long a sender trusts a cached location without
	// hearing from the owner. Default 30s; owners remember the watcher a
	// little longer, so a change is never missed.
	CacheTTL time.Duration
	// CacheSize bounds the sender-side location cache. Default 100000 keys.
	CacheSize int
	// Store keeps messages; nil: live delivery only, at most once.
	Store   store.Store
	Logger  *slog.Logger
	Metrics *Metrics
}

// watchSlack is how much longer an owner keeps a watcher than the watcher
// keeps its cache entry, so that no change goes untold.
const watchSlack = 5 * time.Second

// settleWait bounds how long a sender retries a lookup that the cluster
// cannot answer yet (the owner is still rebuilding its directory, or the
// owner just died) before it answers `unavailable`.
const settleWait = 2 * time.Second

// Errors behind an `unavailable` answer.
var (
	ErrNoRing    = errors.New("no members in the ring yet")
	ErrNotOwner  = errors.New("asked node does not own the key on its ring")
	ErrUnsettled = errors.New("owner is still rebuilding its directory")
)

// Router is one node's routing state. It implements session.Handler.
type Router struct {
	cfg   Config
	log   *slog.Logger
	m     *Metrics
	links Transport
	view  atomic.Pointer[view]
	dir   *Directory
	cache *locationCache
	local localIndex

	midPrefix string
	midSeq    atomic.Uint64

	membersMu   sync.Mutex        // serializes SetMembers
	retired     map[string]string // node -> its last former incarnation
	settle      settlement
	regsMu      sync.Mutex
	regsPending int           // registrations not yet answered
	regsIdle    chan struct{} // closed when regsPending drops to 0; made by WaitRegistrations
	answers     chan recordedAnswer
	retry       retries
	keys        keyedSends

	stop chan struct{}
	wg   sync.WaitGroup
}

// Transport carries the router's requests to its peers and serves theirs:
// link.Links between processes, an in-memory network in a simulation.
type Transport interface {
	// Serve starts serving the peers' requests with h.
	Serve(h link.Handler)
	// SetPeers replaces the peers and their addresses.
	SetPeers(addrs map[string]string)
	// Request sends a request to peer; cb gets the reply or an error,
	// exactly once. It reports whether the request went out.
	Request(peer string, k link.Kind, payload []byte, cb func([]byte, error)) bool
	// Queued is the number of frames waiting to go out.
	Queued() int
	// Close stops it, failing requests still pending.
	Close()
}

// New starts a router that talks to its peers through t, which it owns from
// now on: Close closes it.
func New(cfg Config, t Transport) *Router {
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = 30 * time.Second
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 100000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var prefix [10]byte
	rand.Read(prefix[:])
	r := &Router{
		cfg:       cfg,
		log:       cfg.Logger,
		m:         cfg.Metrics,
		dir:       newDirectory(),
		cache:     newLocationCache(cfg.CacheSize),
		local:     newLocalIndex(),
		midPrefix: base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(prefix[:]) + "-",
		retired:   make(map[string]string),
		stop:      make(chan struct{}),
	}
	empty, _ := ring.New(nil)
	r.view.Store(newView(nil, empty))
	r.links = t
	t.Serve(r.handlePeer)
	r.wg.Add(1)
	go r.sweepLoop()
	if cfg.Store != nil {
		r.answers = make(chan recordedAnswer, answerQueue)
		r.wg.Add(1)
		go r.recordLoop()
	}
	return r
}

// Close stops the links and the background work.
func (r *Router) Close() {
	close(r.stop)
	r.links.Close()
	r.wg.Wait()
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

// result is the outcome of routing one message, or of a join or leave.
type result struct {
	status     string // an ack status, or "" with err set
	recipients int
	err        error
	seq        int64  // with a store: the message's offset
	mid        string // a send's message id, so that a client matches its own copies
	page       bool   // a sync page: last and more are set
	last       int64
	more       bool
}

// HandleFrame acts on a send, join or leave from a client connection. It
// runs in the connection's reader, so that its frames are routed in order;
// only a lookup at an owner (on a cache miss) or a join waits here.
func (r *Router) HandleFrame(c *session.Conn, f *protocol.Frame) {
	id, typ := f.ID, f.Type // f is reused by the reader once this returns
	answer := func(res result) { r.answer(c, id, typ, res) }
	switch f.Type {
	case protocol.TypeSend:
		if f.Room != "" && !c.Joined(f.Room) {
			answer(result{err: errNotMember})
			return
		}
		r.route(store.Append{Mid: r.newMid(), From: c.User, To: f.To, Room: f.Room, Body: f.Body,
			TS: time.Now().UnixMilli(), Key: f.Key}, c, answer)
	case protocol.TypeJoin:
		room := strings.Clone(f.Room) // kept for the life of the membership
		added, err := c.Join(room)
		if err != nil {
			answer(result{err: err})
			return
		}
		if !added {
			answer(result{status: protocol.StatusOK})
			return
		}
		replay := f.HasSince && r.cfg.Store != nil
		if replay {
			// Live messages wait from before the registration, so that
			// none falls between the replay and live delivery.
			c.BeginReplay(room)
		}
		err = r.updateLocal(Key{Room: true, Name: room}, c, true)
		through := f.Since
		if err == nil && replay {
			through, err = r.replayRoom(c, room, f.Since)
		}
		if replay {
			c.EndReplay(room, through)
		}
		if err != nil {
			c.Leave(room)
			_ = r.updateLocal(Key{Room: true, Name: room}, c, false)
			answer(result{err: err})
			return
		}
		answer(result{status: protocol.StatusOK})
	case protocol.TypeSync:
		if r.cfg.Store == nil {
			answer(result{err: errNoStore})
			return
		}
		r.sync(c, f.After, answer)
	case protocol.TypeLeave:
		if c.Leave(f.Room) {
			if err := r.updateLocal(Key{Room: true, Name: f.Room}, c, false); err != nil {
				answer(result{err: err})
				return
			}
		}
		answer(result{status: protocol.StatusOK})
	}
}

var (
	errNotMember = errors.New("not a member")
	errNoStore   = errors.New("this cluster keeps no history: it runs without a message store")
)

func (r *Router) answer(c *session.Conn, id, typ string, res result) {
	var frame []byte
	switch {
	case res.err == errNotMember:
		r.m.answerStatus.WithLabelValues(protocol.CodeNotMember).Inc()
		frame = protocol.AppendError(nil, id, protocol.CodeNotMember, "join the room before sending to it")
	case res.err == errNoStore:
		r.m.answerStatus.WithLabelValues(protocol.CodeUnavailable).Inc()
		frame = protocol.AppendError(nil, id, protocol.CodeUnavailable, res.err.Error())
	case res.err == session.ErrTooManyRooms:
		r.m.answerStatus.WithLabelValues(protocol.CodeBadRequest).Inc()
		frame = protocol.AppendError(nil, id, protocol.CodeBadRequest, res.err.Error())
	case res.err != nil:
		r.m.answerStatus.WithLabelValues(protocol.CodeUnavailable).Inc()
		r.log.Debug("answered unavailable", "user", c.User, "conn", c.ID, "type", typ, "err", res.err)
		frame = protocol.AppendError(nil, id, protocol.CodeUnavailable, "the cluster cannot route this right now; retry later")
	default:
		r.m.answerStatus.WithLabelValues(res.status).Inc()
		n := -1
		if res.status == protocol.StatusSent {
			n = res.recipients
		}
		frame = protocol.AppendAckFrame(nil, &protocol.Ack{ID: id, Status: res.status, Recipients: n,
			Seq: res.seq, Mid: res.mid, Page: res.page, Last: res.last, More: res.more})
	}
	c.Answer(frame)
}

// Attach registers a new connection with its user's owner and returns once
// the owner has recorded it, so that messages sent from any node reach it.
// On error the connection is not registered.
//
// When the owner cannot be reached (it just died, and gossip has not said
// so yet), Attach keeps trying for attachWait: the ring will soon name a new
// owner, and a user reconnecting from the dead node should get in then
// rather than be refused.
func (r *Router) Attach(c *session.Conn) error {
	key := Key{Name: c.User}
	err := r.updateLocal(key, c, true)
	deadline := time.Now().Add(attachWait)
	for backoff := 20 * time.Millisecond; err != nil && retryable(err) && time.Now().Add(backoff).Before(deadline); backoff = min(2*backoff, 500*time.Millisecond) {
		select {
		case <-time.After(backoff):
		case <-r.stop:
			_ = r.updateLocal(key, c, false)
			return err
		}
		err = <-r.registerCurrent(key)
	}
	if err != nil {
		_ = r.updateLocal(key, c, false)
		return err
	}
	r.m.Connections.Inc()
	return nil
}

// attachWait bounds how long a new connection waits for its owner: longer
// than crash detection (about 2.5 s on loopback) and the settling after it.
const attachWait = 5 * time.Second

// registerCurrent sends this node's current count for key to its current
// owner.
func (r *Router) registerCurrent(key Key) <-chan error {
	r.local.mu.Lock()
	defer r.local.mu.Unlock()
	owner := r.view.Load().ring.Owner(key.Name)
	if owner == "" {
		done := make(chan error, 1)
		done <- ErrNoRing
		return done
	}
	return r.registerLocked(owner, []registration{{key, len(r.local.conns[key])}})
}

// Closed unregisters a connection and its room memberships.
func (r *Router) Closed(c *session.Conn, reason session.CloseReason) {
	r.m.Connections.Dec()
	r.m.Closes.WithLabelValues(reason.Label).Inc()
	r.updateLocalAsync(Key{Name: c.User}, c, false)
	for _, room := range c.Rooms() {
		c.Leave(room)
		r.updateLocalAsync(Key{Room: true, Name: room}, c, false)
	}
}

// Locations answers where key's connections are, through its owner and
// without caching: for the HTTP API.
func (r *Router) Locations(ctx context.Context, key Key) ([]Location, error) {
	return r.retryUnsettled(func() ([]Location, error) { return r.locateOnce(ctx, key, false) })
}

// Publish routes a message that comes from the HTTP API rather than from a
// connection; it waits for the answer a client would get.
func (r *Router) Publish(ctx context.Context, from, to, room, body string) (status string, recipients int, seq int64, err error) {
	done := make(chan result, 1)
	// The API's sender is not a user: no copy to an inbox or to devices.
	r.route(store.Append{Mid: r.newMid(), From: from, To: to, Room: room, Body: body,
		TS: time.Now().UnixMilli(), NoSenderCopy: true}, nil, func(res result) { done <- res })
	select {
	case res := <-done:
		return res.status, res.recipients, res.seq, res.err
	case <-ctx.Done():
		return "", 0, 0, ctx.Err()
	}
}

// route sends one chat message from sender (nil for the API): stored first
// when there is a store, then to its recipients' nodes.
func (r *Router) route(a store.Append, sender *session.Conn, done func(result)) {
	if a.Room != "" {
		r.m.ChatMessages.WithLabelValues("room").Inc()
	} else {
		r.m.ChatMessages.WithLabelValues("direct").Inc()
	}
	if r.cfg.Store != nil {
		r.storeAndRoute(a, sender, done)
		return
	}
	m := protocol.Msg{Mid: a.Mid, From: a.From, To: a.To, Room: a.Room, Body: a.Body, TS: a.TS}
	r.routeLive(m, 0, sender, func(res result) {
		res.mid = a.Mid
		done(res)
	})
}

// routeLive sends m to the connections of its recipients (room members but
// the sender, or the recipient's devices and the sender's other devices).
// With a store, m.Seq is its offset in the recipient's stream and senderSeq
// the one in the sender's inbox, which the sender's devices read it from.
func (r *Router) routeLive(m protocol.Msg, senderSeq int64, sender *session.Conn, done func(result)) {
	frame := protocol.AppendMsg(make([]byte, 0, 160+len(m.Body)), &m)
	if m.Room != "" {
		r.routeRoom(&forward{a: m.Room, b: m.From, frame: frame, seq: m.Seq}, sender, done)
		return
	}
	f := &forward{a: m.To, frame: frame, copy: frame}
	if sender != nil {
		f.b = m.From
		if senderSeq > 0 {
			m.Seq = senderSeq
			f.copy = protocol.AppendMsg(make([]byte, 0, 160+len(m.Body)), &m)
		}
	}
	r.routeDirect(f, sender, done)
}

// routeDirect delivers a direct message (f.a is the recipient) to every
// connection of the recipient, and f.copy to every connection of f.b, the
// sender, but the sending one (sender; the API's sender has none, and f.b
// is empty then). done gets delivered when at least one connection of the
// recipient got it.
func (r *Router) routeDirect(f *forward, sender *session.Conn, done func(result)) {
	to, copyTo := f.a, f.b
	var targets []string
	holders := 0
	if r.cfg.Mode == Broadcast {
		targets = r.others()
	} else {
		locs, err := r.locate(Key{Name: to})
		if err != nil {
			done(result{err: err})
			return
		}
		targets = r.appendRemote(targets, locs)
		holders = len(targets) // the nodes that hold `to`, by the answer we used
		if copyTo != "" && copyTo != to {
			// The sender's other devices: their node is usually this one.
			if locs, err := r.locate(Key{Name: copyTo}); err == nil {
				targets = r.appendRemote(targets, locs)
			} else {
				r.log.Debug("sender copies not routed", "user", copyTo, "err", err)
			}
		}
	}
	fan := &fanout{direct: true, done: done}
	fan.add(r.deliverDirect(to, copyTo, sender, f.frame, f.copy))
	if len(targets) == 0 {
		fan.finish()
		return
	}
	fan.expect(len(targets))
	f.mode = forwardDirect
	payload := f.append(make([]byte, 0, len(f.frame)+len(f.copy)+len(to)+len(copyTo)+16))
	for i, node := range targets {
		if i >= holders {
			r.request(node, kindForward, 1, payload, fan.reply)
			continue
		}
		// A holder that has no connection of `to` proves the answer wrong
		// (its owner's word of the change was lost): ask afresh next time.
		r.request(node, kindForward, 1, payload, func(p []byte, err error) {
			if got, refused, derr := decodeDelivered(p); err == nil && derr == nil && got == 0 && refused == 0 {
				r.cache.invalidate(Key{Name: to})
			}
			fan.reply(p, err)
		})
	}
}

// routeRoom delivers a room message (f.a is the room, f.b the sender's user)
// to every joined connection but the sending one. done gets the number of
// connections it was written to.
func (r *Router) routeRoom(f *forward, sender *session.Conn, done func(result)) {
	room := f.a
	var targets []string
	if r.cfg.Mode == Broadcast {
		targets = r.others()
	} else {
		locs, err := r.locate(Key{Room: true, Name: room})
		if err != nil {
			done(result{err: err})
			return
		}
		targets = r.appendRemote(targets, locs)
	}
	fan := &fanout{done: done}
	fan.add(r.deliverRoom(room, f.seq, sender, f.frame), 0)
	if len(targets) == 0 {
		fan.finish()
		return
	}
	fan.expect(len(targets))
	f.mode = forwardRoom
	payload := f.append(make([]byte, 0, len(f.frame)+len(room)+len(f.b)+16))
	for _, node := range targets {
		r.request(node, kindForward, 1, payload, fan.reply)
	}
}

// appendRemote adds the nodes of locs other than this one, once each.
func (r *Router) appendRemote(targets []string, locs []Location) []string {
next:
	for _, l := range locs {
		if l.Node == r.cfg.Self {
			continue
		}
		for _, t := range targets {
			if t == l.Node {
				continue next
			}
		}
		targets = append(targets, l.Node)
	}
	return targets
}

// others is every ring member but this node: the broadcast baseline.
func (r *Router) others() []string {
	members := r.view.Load().ring.Members()
	out := members[:0]
	for _, m := range members {
		if m != r.cfg.Self {
			out = append(out, m)
		}
	}
	return out
}

// fanout gathers the answers of the nodes one message went to.
type fanout struct {
	direct bool
	done   func(result)

	mu        sync.Mutex
	remaining int
	count     int // connections that got it
	refused   int // connections of the recipient that were closing
	failed    error
}

func (f *fanout) expect(n int) {
	f.mu.Lock()
	f.remaining = n
	f.mu.Unlock()
}

func (f *fanout) add(got, refused int) {
	f.mu.Lock()
	f.count += got
	f.refused += refused
	f.mu.Unlock()
}

// The answer to a forward: how many connections got the message, and how
// many refused it because they were closing.
func appendDelivered(b []byte, got, refused int) []byte {
	b = binary.AppendUvarint(b, uint64(got))
	return binary.AppendUvarint(b, uint64(refused))
}

func decodeDelivered(p []byte) (got, refused int, err error) {
	d := link.NewDecoder(p)
	got, refused = int(d.Uvarint()), int(d.Uvarint())
	return got, refused, d.Done()
}

func (f *fanout) reply(p []byte, err error) {
	got, refused := 0, 0
	if err == nil {
		if got, refused, err = decodeDelivered(p); err != nil {
			err = fmt.Errorf("forward reply: %w", err)
		}
	}
	f.mu.Lock()
	f.count += got
	f.refused += refused
	if err != nil && f.failed == nil {
		f.failed = err
	}
	f.remaining--
	last := f.remaining == 0
	f.mu.Unlock()
	if last {
		f.finish()
	}
}

func (f *fanout) finish() {
	f.mu.Lock()
	count, refused, failed := f.count, f.refused, f.failed
	f.mu.Unlock()
	switch {
	case !f.direct:
		// Recipients on a node that could not be reached are not counted:
		// the number says who got it.
		f.done(result{status: protocol.StatusSent, recipients: count})
	case count > 0:
		f.done(result{status: protocol.StatusDelivered})
	case failed != nil:
		f.done(result{err: failed})
	case refused > 0:
		// The recipient is connected but moving (its node is draining, or
		// it was just cut): not offline, retry shortly.
		f.done(result{err: errRecipientMoving})
	default:
		f.done(result{status: protocol.StatusOffline})
	}
}

var errRecipientMoving = errors.New("the recipient's connection is closing")

// locate returns the nodes that hold key's connections: from this node's
// directory when it owns key, else from the cache or the owner. While the
// cluster cannot tell (the ring just changed), it retries for settleWait.
func (r *Router) locate(key Key) ([]Location, error) {
	return r.retryUnsettled(func() ([]Location, error) { return r.locateOnce(context.Background(), key, true) })
}

// locateOnce asks once: this node's directory, or the cache (when cached
// answers will do), or the owner.
func (r *Router) locateOnce(ctx context.Context, key Key, useCache bool) ([]Location, error) {
	v := r.view.Load()
	owner := v.ring.Owner(key.Name)
	switch owner {
	case "":
		return nil, ErrNoRing
	case r.cfg.Self:
		return r.lookupOwned(key, "", time.Time{}, v.version)
	}
	if !useCache {
		return r.askOwner(ctx, owner, key, v.version, false)
	}
	now := time.Now()
	locs, hit, f, leader := r.cache.get(key, now)
	if hit {
		r.m.LookupCache.WithLabelValues("hit").Inc()
		return locs, nil
	}
	if !leader {
		<-f.done // the leader always finishes: every request is answered or fails
		return f.locs, f.err
	}
	r.m.LookupCache.WithLabelValues("miss").Inc()
	locs, err := r.askOwner(ctx, owner, key, v.version, true)
	r.cache.finish(key, f, locs, err, now.Add(r.cfg.CacheTTL))
	return locs, err
}

// retryUnsettled retries lookup while its error says the answer is only
// not known yet, for at most settleWait.
func (r *Router) retryUnsettled(lookup func() ([]Location, error)) ([]Location, error) {
	deadline := time.Now().Add(settleWait)
	backoff := 5 * time.Millisecond
	for {
		locs, err := lookup()
		if err == nil || !retryable(err) || time.Now().Add(backoff).After(deadline) {
			return locs, err
		}
		select {
		case <-time.After(backoff):
		case <-r.stop:
			return nil, err
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

func retryable(err error) bool {
	return errors.Is(err, ErrUnsettled) || errors.Is(err, ErrNotOwner) || errors.Is(err, ErrNoRing) ||
		errors.Is(err, link.ErrPeerDown) || errors.Is(err, link.ErrPeerUnknown)
}

// lookupOwned answers a lookup of a key this node owns. A miss is an answer
// only once every member has re-registered for the asker's membership.
func (r *Router) lookupOwned(key Key, watcher string, until time.Time, version string) ([]Location, error) {
	locs := r.dir.Lookup(key, watcher, until)
	if len(locs) == 0 && !r.settle.settled(version, time.Now()) {
		return nil, ErrUnsettled
	}
	return locs, nil
}

// askOwner sends a lookup to owner and waits for its answer; with watch,
// the owner will tell this node when the answer changes.
func (r *Router) askOwner(ctx context.Context, owner string, key Key, version string, watch bool) ([]Location, error) {
	var flags byte
	if watch {
		flags = lookupWatch
	}
	payload := appendKey([]byte{flags}, key)
	payload = link.AppendString(payload, version)
	type answer struct {
		p   []byte
		err error
	}
	ch := make(chan answer, 1)
	r.request(owner, kindLookup, 1, payload, func(p []byte, err error) { ch <- answer{p, err} })
	var a answer
	select {
	case a = <-ch:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if a.err != nil {
		return nil, a.err
	}
	status, locs, err := decodeLocations(a.p)
	if err != nil {
		return nil, fmt.Errorf("lookup %s at %s: %w", key, owner, err)
	}
	switch status {
	case lookupKnown:
		return locs, nil
	case lookupUnsettled:
		return nil, ErrUnsettled
	default:
		return nil, ErrNotOwner
	}
}

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
