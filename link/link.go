// Package link carries requests and replies between the nodes of a cluster:
// one persistent TCP connection to each peer this node sends to, the hello
// that proves both ends hold the cluster key (or, without one, that the
// dialer is a current member), length-prefixed frames sealed under keys
// from that hello, and batched writes. It knows nothing of what a request
// means: the router gives each one a Kind and a payload, and serves the
// peers' requests. It never serves a frame from a peer it has not admitted.
package link

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Errors a request can end with instead of a reply.
var (
	ErrPeerUnknown  = errors.New("peer is not a member")
	ErrPeerDown     = errors.New("link to peer is down")
	ErrBackpressure = errors.New("link queue to peer is full")
	ErrTimeout      = errors.New("peer did not answer in time")
)

// Defaults of Config.
const (
	// DefaultQueue bounds the frames waiting for one peer: about 50 ms of a
	// busy node's traffic to one peer (300,000 frames/s measured in
	// BenchmarkLinkRequest), enough to ride out a scheduling hiccup, small
	// enough that a stuck peer is noticed before memory is.
	DefaultQueue = 16384
	// DefaultRequestTimeout bounds the wait for a reply: longer than any
	// queue on a live peer takes to drain, shorter than a client waits for
	// its ack before it gives up on the connection.
	DefaultRequestTimeout = 3 * time.Second
	// DefaultDialTimeout bounds connecting to a peer and its hello: a peer
	// on the same network answers in well under a millisecond.
	DefaultDialTimeout = time.Second
	// DefaultMaxHandshakes bounds the accepted connections whose hello is
	// not done yet: a cluster's nodes dial each other once per link, a
	// handful at a time even when a whole cluster starts, while a flood of
	// connections that never finish a hello costs at most this many read
	// buffers (32 KiB each) for DialTimeout.
	DefaultMaxHandshakes = 16
)

// Config tunes the node-to-node links.
type Config struct {
	// Self is this node's name, sent in the hello.
	Self string
	// Inc is this process's incarnation, sent in the hello: owners tell a
	// restarted node's registrations from its former self's.
	Inc string
	// Key authenticates links, both ends prove they hold it, and seals
	// every frame after the hello. Empty: a link is accepted only from a
	// current member (SetPeers), by the name, incarnation and address it
	// dials from, and frames go in the clear (loopback, or a trusted
	// network).
	Key []byte
	// Queue bounds the frames waiting for one peer; a request past it fails
	// at once with ErrBackpressure. Default DefaultQueue.
	Queue int
	// RequestTimeout bounds the wait for a reply. Default
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// DialTimeout bounds connecting to a peer, and the hello. Default
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// MaxHandshakes bounds the accepted connections being authenticated at
	// once; past it a new connection is closed at once (refused "busy").
	// Default DefaultMaxHandshakes.
	MaxHandshakes int
	Logger        *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Queue <= 0 {
		c.Queue = DefaultQueue
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = DefaultMaxHandshakes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Peer is who sent a request: a node name and the incarnation of its process.
type Peer struct {
	Name string
	Inc  string
}

// Member is a peer as SetPeers lists it: where to dial it, and the
// incarnation its process announced (a keyless hello must name it).
type Member struct {
	Addr string
	Inc  string
}

// Handler serves one request from a peer. It must not block: it calls reply
// exactly once, now or later, from any goroutine.
type Handler func(from Peer, k Kind, payload []byte, reply func([]byte))

// Links holds one persistent TCP connection to each peer this node sends to,
// and serves the connections peers opened to it. Requests to one peer go out
// in the order they were made, batched into as few writes as the load allows.
type Links struct {
	cfg     Config
	handle  Handler
	dialer  net.Dialer
	refused *refusals
	// handshakes holds a token per accepted connection whose hello is not
	// done: MaxHandshakes at most.
	handshakes chan struct{}

	mu       sync.Mutex
	peers    map[string]Member
	changed  chan struct{}      // closed and replaced by each SetPeers
	out      map[string]*conn   // dialed by us, by peer name
	in       map[*conn]struct{} // accepted, until their reader stopped (a closed one may still serve what it read)
	lastFail map[string]time.Time
	ln       net.Listener
	serving  bool
	closed   bool
	stop     chan struct{}
	wg       sync.WaitGroup
}

// New prepares links that will serve the node-to-node listener ln once
// Serve is called. Close stops them.
func New(cfg Config, ln net.Listener) *Links {
	cfg = cfg.withDefaults()
	l := &Links{
		cfg:        cfg,
		refused:    newRefusals(cfg.Logger),
		handshakes: make(chan struct{}, cfg.MaxHandshakes),
		peers:      make(map[string]Member),
		changed:    make(chan struct{}),
		out:        make(map[string]*conn),
		in:         make(map[*conn]struct{}),
		lastFail:   make(map[string]time.Time),
		ln:         ln,
		stop:       make(chan struct{}),
	}
	l.dialer = net.Dialer{Timeout: cfg.DialTimeout, LocalAddr: sourceAddr(ln.Addr())}
	l.wg.Add(1)
	go l.sweepLoop()
	return l
}

// Serve starts accepting peers' links; h serves their requests. A nil h
// refuses every request with an empty reply (a node that only sends).
func (l *Links) Serve(h Handler) {
	if h == nil {
		h = func(_ Peer, _ Kind, _ []byte, reply func([]byte)) { reply(nil) }
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.serving || l.closed {
		return
	}
	l.serving = true
	l.handle = h
	l.wg.Add(1)
	go l.acceptLoop()
}

// SetPeers replaces the set of peers, by name. Links we dialed to peers no
// longer listed, or listed at another address, are closed, failing their
// pending requests with ErrPeerDown. Links peers dialed to us stay: a peer
// may know of us before we know of it (it joined a moment ago), and closing
// its link would fail its requests for nothing; a peer that goes away
// closes its own. Without a key, a hello from a peer not listed yet waits
// for the SetPeers that lists it, up to DialTimeout.
func (l *Links) SetPeers(peers map[string]Member) {
	l.mu.Lock()
	var stale []*conn
	for name, lc := range l.out {
		if peers[name].Addr != lc.addr {
			stale = append(stale, lc)
			delete(l.out, name)
		}
	}
	l.peers = peers
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	for _, lc := range stale {
		lc.close(ErrPeerDown)
	}
}

// Request sends one request to peer and calls cb exactly once with the reply
// or an error. cb runs on a link goroutine and must not block. Request
// reports whether the request was queued for the wire (cb has then not been
// called yet); when it was not, cb has been called with the reason.
func (l *Links) Request(peer string, k Kind, payload []byte, cb func([]byte, error)) bool {
	return l.RequestCounted(peer, k, payload, nil, 0, cb)
}

// Counter is what RequestCounted counts a request in: a Prometheus counter.
type Counter interface{ Add(float64) }

// RequestCounted is Request, adding n to sent once the request is queued,
// before it can reach the wire: a count read after the reply came, or after
// anything the reply led to, has it.
func (l *Links) RequestCounted(peer string, k Kind, payload []byte, sent Counter, n float64, cb func([]byte, error)) bool {
	lc, err := l.dialed(peer)
	if err != nil {
		cb(nil, err)
		return false
	}
	return lc.request(k, payload, sent, n, cb)
}

// Refused is how many connections the listener refused for reason, one of
// RefusalReasons.
func (l *Links) Refused(reason string) uint64 { return l.refused.count(reason) }

// Queued is the number of frames waiting in all link queues.
func (l *Links) Queued() int {
	l.mu.Lock()
	conns := l.connsLocked()
	l.mu.Unlock()
	n := 0
	for _, lc := range conns { // each conn's lock with no other held
		n += lc.queued()
	}
	return n
}

// Close stops the listener and every link, failing pending requests.
func (l *Links) Close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	close(l.stop)
	conns := l.connsLocked()
	l.mu.Unlock()
	l.ln.Close()
	for _, lc := range conns {
		lc.close(ErrPeerDown)
	}
	l.wg.Wait()
}

// connsLocked lists every link, dialed and accepted; the caller holds l.mu.
func (l *Links) connsLocked() []*conn {
	conns := make([]*conn, 0, len(l.out)+len(l.in))
	for _, lc := range l.out {
		conns = append(conns, lc)
	}
	for lc := range l.in {
		conns = append(conns, lc)
	}
	return conns
}

// failFast is how long after a failed dial requests to that peer fail at
// once instead of dialing again: a dead peer costs one dial per interval,
// not one per message.
const failFast = 200 * time.Millisecond

// errDialFailed marks a link that never connected: only that starts the
// fail-fast interval, not a link that worked and then closed.
var errDialFailed = errors.New("dial failed")

func (l *Links) dialed(peer string) (*conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lc := l.out[peer]; lc != nil {
		return lc, nil
	}
	if l.closed {
		return nil, ErrPeerDown
	}
	m, ok := l.peers[peer]
	if !ok {
		return nil, ErrPeerUnknown
	}
	if time.Since(l.lastFail[peer]) < failFast {
		return nil, ErrPeerDown
	}
	lc := newConn(l, peer, m.Addr)
	l.out[peer] = lc
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		lc.dialAndRun()
	}()
	return lc, nil
}

func (l *Links) forget(lc *conn, failed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.out[lc.peer] == lc {
		delete(l.out, lc.peer)
		if failed {
			l.lastFail[lc.peer] = time.Now()
		}
	}
}

// acceptRetryMax caps the wait before accepting again after a failed
// accept: a second, as net/http's Server waits.
const acceptRetryMax = time.Second

func (l *Links) acceptLoop() {
	defer l.wg.Done()
	var delay time.Duration // since the last accept that worked
	for {
		c, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.stop:
				return
			default:
			}
			// Out of file descriptors, say (EMFILE, a burst of clients):
			// the listener is fine and only Close ends it, so wait a
			// little and accept again rather than refuse every peer until
			// a restart while gossip says this node is alive.
			delay = min(max(2*delay, 5*time.Millisecond), acceptRetryMax)
			l.cfg.Logger.Error("link accept failed; accepting again", "err", err, "in", delay.String())
			select {
			case <-time.After(delay):
			case <-l.stop:
				return
			}
			continue
		}
		delay = 0
		select {
		case l.handshakes <- struct{}{}:
		default:
			l.refused.refuse(c.RemoteAddr(), "", RefusedBusy,
				fmt.Errorf("%d links being authenticated already", l.cfg.MaxHandshakes), time.Now())
			c.Close()
			continue
		}
		lc := newConn(l, "", c.RemoteAddr().String())
		lc.nc = c
		lc.served = make(chan struct{})
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			lc.serveAccepted()
		}()
	}
}

// sweepLoop fails requests whose peer did not answer in time, such as one
// cut off by a partition that no TCP reset reports.
func (l *Links) sweepLoop() {
	defer l.wg.Done()
	t := time.NewTicker(l.cfg.RequestTimeout / 10)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case now := <-t.C:
			l.refused.flush(now)
			l.mu.Lock()
			conns := make([]*conn, 0, len(l.out))
			for _, lc := range l.out {
				conns = append(conns, lc)
			}
			l.mu.Unlock()
			for _, lc := range conns {
				lc.expire(now)
			}
		}
	}
}
