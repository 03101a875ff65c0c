package router

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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

// LinkConfig tunes the node-to-node links.
type LinkConfig struct {
	// Self is this node's name, sent in the hello.
	Self string
	// Inc is this process's incarnation, sent in the hello: owners tell a
	// restarted node's registrations from its former self's.
	Inc string
	// Key authenticates links: both ends prove they hold it. Empty: links
	// are not authenticated (development).
	Key []byte
	// Queue bounds the frames waiting for one peer; a request past it fails
	// at once with ErrBackpressure. Default 16384: about 50 ms of a busy
	// node's traffic to one peer.
	Queue int
	// RequestTimeout bounds the wait for a reply. Default 3s.
	RequestTimeout time.Duration
	// DialTimeout bounds connecting to a peer. Default 1s.
	DialTimeout time.Duration
	Logger      *slog.Logger
	// Sent, when set, counts each request sent: n messages of kind k.
	Sent func(k kind, n int)
	// Replied, when set, counts each reply sent to a request of kind k.
	Replied func(k kind)
}

// Peer is who sent a request: a node name and the incarnation of its process.
type Peer struct {
	Name string
	Inc  string
}

// RequestHandler serves one request from a peer. It must not block: it calls
// reply exactly once, now or later, from any goroutine.
type RequestHandler func(from Peer, k kind, payload []byte, reply func([]byte))

// Links holds one persistent TCP connection to each peer this node sends to,
// and serves the connections peers opened to it. Requests to one peer go out
// in the order they were made, batched into as few writes as the load allows.
type Links struct {
	cfg    LinkConfig
	handle RequestHandler

	mu       sync.Mutex
	addrs    map[string]string      // peer name -> link address
	out      map[string]*linkConn   // dialed by us, by peer name
	in       map[*linkConn]struct{} // accepted, until their reader stopped (a closed one may still serve what it read)
	lastFail map[string]time.Time
	ln       net.Listener
	closed   bool
	stop     chan struct{}
	wg       sync.WaitGroup
}

// NewLinks serves the node-to-node listener ln. Close stops it.
func NewLinks(cfg LinkConfig, ln net.Listener, handle RequestHandler) *Links {
	if cfg.Queue <= 0 {
		cfg.Queue = 16384
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 3 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Links{
		cfg:      cfg,
		handle:   handle,
		addrs:    make(map[string]string),
		out:      make(map[string]*linkConn),
		in:       make(map[*linkConn]struct{}),
		lastFail: make(map[string]time.Time),
		ln:       ln,
		stop:     make(chan struct{}),
	}
	l.wg.Add(2)
	go l.acceptLoop()
	go l.sweepLoop()
	return l
}

// SetPeers replaces the set of peers and their link addresses. Links we
// dialed to peers no longer listed, or listed at another address, are
// closed, failing their pending requests with ErrPeerDown. Links peers
// dialed to us stay: a peer may know of us before we know of it (it joined
// a moment ago), and closing its link would fail its requests for nothing;
// a peer that goes away closes its own.
func (l *Links) SetPeers(addrs map[string]string) {
	l.mu.Lock()
	var stale []*linkConn
	for name, lc := range l.out {
		if addrs[name] != lc.addr {
			stale = append(stale, lc)
			delete(l.out, name)
		}
	}
	l.addrs = addrs
	l.mu.Unlock()
	for _, lc := range stale {
		lc.close(ErrPeerDown)
	}
}

// Request sends one request (counted as n messages) to peer and calls cb
// exactly once with the reply or an error. cb runs on a link goroutine and
// must not block.
func (l *Links) Request(peer string, k kind, n int, payload []byte, cb func([]byte, error)) {
	lc, err := l.dialed(peer)
	if err != nil {
		cb(nil, err)
		return
	}
	if lc.request(k, payload, cb) && l.cfg.Sent != nil {
		l.cfg.Sent(k, n)
	}
}

// Queued is the number of frames waiting in all link queues.
func (l *Links) Queued() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, lc := range l.out {
		n += len(lc.queue)
	}
	for lc := range l.in {
		n += len(lc.queue)
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
	conns := make([]*linkConn, 0, len(l.out)+len(l.in))
	for _, lc := range l.out {
		conns = append(conns, lc)
	}
	for lc := range l.in {
		conns = append(conns, lc)
	}
	l.mu.Unlock()
	l.ln.Close()
	for _, lc := range conns {
		lc.close(ErrPeerDown)
	}
	l.wg.Wait()
}

// failFast is how long after a failed dial requests to that peer fail at
// once instead of dialing again: a dead peer costs one dial per interval,
// not one per message.
const failFast = 200 * time.Millisecond

// errDialFailed marks a link that never connected: only that starts the
// fail-fast interval, not a link that worked and then closed.
var errDialFailed = errors.New("dial failed")

func (l *Links) dialed(peer string) (*linkConn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lc := l.out[peer]; lc != nil {
		return lc, nil
	}
	if l.closed {
		return nil, ErrPeerDown
	}
	addr, ok := l.addrs[peer]
	if !ok {
		return nil, ErrPeerUnknown
	}
	if time.Since(l.lastFail[peer]) < failFast {
		return nil, ErrPeerDown
	}
	lc := newLinkConn(l, peer, addr)
	l.out[peer] = lc
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		lc.dialAndRun()
	}()
	return lc, nil
}

func (l *Links) forget(lc *linkConn, failed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.out[lc.peer] == lc {
		delete(l.out, lc.peer)
		if failed {
			l.lastFail[lc.peer] = time.Now()
		}
	}
}

func (l *Links) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.stop:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			l.cfg.Logger.Error("link accept failed", "err", err)
			return
		}
		lc := newLinkConn(l, "", c.RemoteAddr().String())
		lc.conn = c
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
			l.mu.Lock()
			conns := make([]*linkConn, 0, len(l.out))
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

type outFrame struct {
	k       kind
	id      uint64
	payload []byte
}

type call struct {
	cb       func([]byte, error)
	deadline time.Time
}

// linkConn is one TCP connection between two nodes. A dialed one carries
// our requests and their replies; an accepted one carries a peer's requests
// and our replies.
type linkConn struct {
	links *Links
	peer  string
	inc   string // the peer's incarnation, from its hello (accepted links)
	addr  string
	conn  net.Conn // set before the writer or reader starts
	queue chan outFrame

	mu      sync.Mutex
	pending map[uint64]call
	nextID  uint64
	err     error // set once closed
	done    chan struct{}
	served  chan struct{} // accepted links: closed once the reader stopped
}

func newLinkConn(l *Links, peer, addr string) *linkConn {
	return &linkConn{
		links:   l,
		peer:    peer,
		addr:    addr,
		queue:   make(chan outFrame, l.cfg.Queue),
		pending: make(map[uint64]call),
		done:    make(chan struct{}),
	}
}

func (lc *linkConn) request(k kind, payload []byte, cb func([]byte, error)) bool {
	lc.mu.Lock()
	if lc.err != nil {
		err := lc.requestError(lc.err)
		lc.mu.Unlock()
		cb(nil, err)
		return false
	}
	lc.nextID++
	id := lc.nextID
	// Enqueue under the lock so that ids reach the wire in request order.
	select {
	case lc.queue <- outFrame{k: k, id: id, payload: payload}:
		lc.pending[id] = call{cb: cb, deadline: time.Now().Add(lc.links.cfg.RequestTimeout)}
		lc.mu.Unlock()
		return true
	default:
		lc.mu.Unlock()
		cb(nil, fmt.Errorf("%w: %s", ErrBackpressure, lc.peer))
		return false
	}
}

// reply queues the answer to request id; it waits for room rather than drop
// an answer, which pushes back on a peer that floods us with requests.
func (lc *linkConn) reply(id uint64, payload []byte) {
	select {
	case lc.queue <- outFrame{k: kindReply, id: id, payload: payload}:
	case <-lc.done:
	}
}

func (lc *linkConn) close(err error) {
	lc.mu.Lock()
	if lc.err != nil {
		lc.mu.Unlock()
		return
	}
	lc.err = err
	pending := lc.pending
	lc.pending = nil
	close(lc.done)
	conn := lc.conn
	lc.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
	lc.links.forget(lc, errors.Is(err, errDialFailed))
	err = lc.requestError(err)
	for _, c := range pending {
		c.cb(nil, err)
	}
	// Requests still queued were never sent; their callers were in pending.
}

// requestError is what a request fails with once the link closed for err:
// a timeout as it is, anything else as the peer being down, which callers
// may retry on a new link. A request made after the close, before the link
// is forgotten, fails the same way as one that was pending.
func (lc *linkConn) requestError(err error) error {
	if errors.Is(err, ErrTimeout) {
		return err
	}
	return fmt.Errorf("%w: %s: %v", ErrPeerDown, lc.peer, err)
}

// expire fails the requests that waited too long. A peer that does not
// answer in time is cut off or stuck: the connection is closed too, so the
// next request dials afresh instead of queueing behind a dead TCP stream
// that may take seconds of retransmission backoff to recover.
func (lc *linkConn) expire(now time.Time) {
	lc.mu.Lock()
	late := false
	for _, c := range lc.pending {
		if now.After(c.deadline) {
			late = true
			break
		}
	}
	lc.mu.Unlock()
	if late {
		lc.links.cfg.Logger.Warn("link timed out, reconnecting", "peer", lc.peer)
		lc.close(fmt.Errorf("%w: %s", ErrTimeout, lc.peer))
	}
}

func (lc *linkConn) dialAndRun() {
	conn, err := net.DialTimeout("tcp", lc.addr, lc.links.cfg.DialTimeout)
	if err != nil {
		lc.links.cfg.Logger.Warn("link dial failed", "peer", lc.peer, "addr", lc.addr, "err", err)
		lc.close(fmt.Errorf("%w: %s: %v", errDialFailed, lc.addr, err))
		return
	}
	lc.mu.Lock()
	if lc.err != nil {
		lc.mu.Unlock()
		conn.Close()
		return
	}
	lc.conn = conn
	lc.mu.Unlock()
	br := bufio.NewReaderSize(conn, 32<<10)
	if err := lc.clientHandshake(br); err != nil {
		lc.links.cfg.Logger.Warn("link handshake failed", "peer", lc.peer, "err", err)
		lc.close(err)
		return
	}
	go lc.writeLoop()
	lc.readReplies(br)
}

func (lc *linkConn) serveAccepted() {
	br := bufio.NewReaderSize(lc.conn, 32<<10)
	peer, err := lc.serverHandshake(br)
	if err != nil {
		lc.links.cfg.Logger.Warn("link refused", "remote", lc.addr, "err", err)
		lc.conn.Close()
		return
	}
	l := lc.links
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		lc.conn.Close()
		return
	}
	lc.peer, lc.inc = peer.Name, peer.Inc
	var older []*linkConn
	for o := range l.in {
		if o.peer == peer.Name {
			older = append(older, o)
		}
	}
	l.in[lc] = struct{}{}
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.in, lc)
		l.mu.Unlock()
		close(lc.served)
	}()
	// A peer dials anew only once its old link failed it, and what it sent
	// there unanswered it sends again here, newer (a registration carries the
	// key's count at the time it goes). The old link's reader may still hold
	// frames, closed or not: it must stop before this one starts, or an old
	// count could land after a new one and stay until the key changes again.
	for _, o := range older {
		lc.links.cfg.Logger.Debug("link replaced by a newer one", "peer", peer.Name)
		o.close(ErrPeerDown)
		<-o.served
	}
	go lc.writeLoop()
	lc.readRequests(br)
}

// The hello: the dialer sends version, name and a nonce; the acceptor
// answers with its own nonce and a MAC over both; the dialer answers with
// its MAC. With no key the MACs are empty and only the version is checked.
const nonceLen = 16

func (lc *linkConn) mac(role byte, a, b []byte, name string) []byte {
	if len(lc.links.cfg.Key) == 0 {
		return nil
	}
	m := hmac.New(sha256.New, lc.links.cfg.Key)
	m.Write([]byte{role})
	m.Write(a)
	m.Write(b)
	m.Write([]byte(name))
	return m.Sum(nil)
}

func (lc *linkConn) clientHandshake(br *bufio.Reader) error {
	_ = lc.conn.SetDeadline(time.Now().Add(lc.links.cfg.DialTimeout))
	defer lc.conn.SetDeadline(time.Time{})
	nonce := make([]byte, nonceLen)
	rand.Read(nonce)
	hello := binary.AppendUvarint(nil, linkVersion)
	hello = appendStr(hello, lc.links.cfg.Self)
	hello = appendStr(hello, lc.links.cfg.Inc)
	hello = appendBytes(hello, nonce)
	if err := writeFrame(lc.conn, kindHello, 0, hello); err != nil {
		return err
	}
	k, _, p, err := readFrame(br)
	if err != nil {
		return fmt.Errorf("hello from %s: %w", lc.addr, err)
	}
	d := decoder{b: p}
	theirNonce, theirMAC := d.bytes(), d.bytes()
	if k != kindHello || d.done() != nil {
		return fmt.Errorf("hello from %s: %w", lc.addr, errMalformed)
	}
	if !hmac.Equal(theirMAC, lc.mac('s', nonce, theirNonce, lc.peer)) {
		return fmt.Errorf("hello from %s: peer does not hold the cluster key", lc.addr)
	}
	return writeFrame(lc.conn, kindHello, 0, appendBytes(nil, lc.mac('c', theirNonce, nonce, lc.links.cfg.Self)))
}

func (lc *linkConn) serverHandshake(br *bufio.Reader) (Peer, error) {
	_ = lc.conn.SetDeadline(time.Now().Add(lc.links.cfg.DialTimeout))
	defer lc.conn.SetDeadline(time.Time{})
	k, _, p, err := readFrame(br)
	if err != nil {
		return Peer{}, err
	}
	d := decoder{b: p}
	version := d.uvarint()
	if d.err == nil && version != linkVersion {
		return Peer{}, fmt.Errorf("peer speaks link version %d, want %d", version, linkVersion)
	}
	name := d.string()
	inc := d.string()
	theirNonce := d.bytes()
	if k != kindHello || d.done() != nil || len(theirNonce) != nonceLen {
		return Peer{}, errMalformed
	}
	nonce := make([]byte, nonceLen)
	rand.Read(nonce)
	answer := appendBytes(nil, nonce)
	answer = appendBytes(answer, lc.mac('s', theirNonce, nonce, lc.links.cfg.Self))
	if err := writeFrame(lc.conn, kindHello, 0, answer); err != nil {
		return Peer{}, err
	}
	k, _, p, err = readFrame(br)
	if err != nil {
		return Peer{}, err
	}
	d = decoder{b: p}
	theirMAC := d.bytes()
	if k != kindHello || d.done() != nil {
		return Peer{}, errMalformed
	}
	if !hmac.Equal(theirMAC, lc.mac('c', nonce, theirNonce, name)) {
		return Peer{}, fmt.Errorf("peer %q does not hold the cluster key", name)
	}
	return Peer{Name: name, Inc: inc}, nil
}

// writeLoop owns all writes: it drains the queue into a buffer and flushes
// only when the queue is empty, so a burst costs one system call.
func (lc *linkConn) writeLoop() {
	bw := bufio.NewWriterSize(lc.conn, 64<<10)
	var hdr [4 + 1 + binary.MaxVarintLen64]byte
	for {
		var f outFrame
		select {
		case f = <-lc.queue:
		case <-lc.done:
			return
		}
		for {
			n := putHeader(hdr[:], f.k, f.id, len(f.payload))
			if _, err := bw.Write(hdr[:n]); err != nil {
				lc.close(err)
				return
			}
			if _, err := bw.Write(f.payload); err != nil {
				lc.close(err)
				return
			}
			select {
			case f = <-lc.queue:
				continue
			default:
			}
			break
		}
		if err := bw.Flush(); err != nil {
			lc.close(err)
			return
		}
	}
}

func (lc *linkConn) readReplies(br *bufio.Reader) {
	for {
		k, id, p, err := readFrame(br)
		if err == nil && k != kindReply {
			err = fmt.Errorf("%w: %s from a peer on a dialed link", errMalformed, k)
		}
		if err != nil {
			lc.close(err)
			return
		}
		lc.mu.Lock()
		c, ok := lc.pending[id]
		delete(lc.pending, id)
		lc.mu.Unlock()
		if ok {
			c.cb(p, nil)
		}
	}
}

func (lc *linkConn) readRequests(br *bufio.Reader) {
	for {
		k, id, p, err := readFrame(br)
		if err != nil {
			if err != io.EOF {
				lc.links.cfg.Logger.Debug("link closed", "peer", lc.peer, "err", err)
			}
			lc.close(ErrPeerDown)
			return
		}
		replied := false
		lc.links.handle(Peer{Name: lc.peer, Inc: lc.inc}, k, p, func(answer []byte) {
			if replied {
				panic("router: request answered twice")
			}
			replied = true
			if lc.links.cfg.Replied != nil {
				lc.links.cfg.Replied(k)
			}
			lc.reply(id, answer)
		})
	}
}

func putHeader(b []byte, k kind, id uint64, payloadLen int) int {
	n := 4
	b[n] = byte(k)
	n++
	n += binary.PutUvarint(b[n:], id)
	binary.BigEndian.PutUint32(b[:4], uint32(n-4+payloadLen))
	return n
}

func writeFrame(w io.Writer, k kind, id uint64, payload []byte) error {
	var hdr [4 + 1 + binary.MaxVarintLen64]byte
	n := putHeader(hdr[:], k, id, len(payload))
	_, err := w.Write(append(hdr[:n:n], payload...))
	return err
}

// readFrame reads one frame into a fresh buffer: the payload may be kept by
// the caller (a forwarded message is queued as is to client connections).
func readFrame(br *bufio.Reader) (kind, uint64, []byte, error) {
	var lenBuf [4]byte
	if _, err := io.ReadFull(br, lenBuf[:]); err != nil {
		return 0, 0, nil, err
	}
	n := binary.BigEndian.Uint32(lenBuf[:])
	if n < 2 || n > maxLinkFrame {
		return 0, 0, nil, fmt.Errorf("%w: length %d", errMalformed, n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return 0, 0, nil, err
	}
	id, m := binary.Uvarint(body[1:])
	if m <= 0 {
		return 0, 0, nil, errMalformed
	}
	return kind(body[0]), id, body[1+m:], nil
}
