package link

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// readBuffer is the read buffer of one link: it holds a burst of small
// frames.
const readBuffer = 32 << 10

type call struct {
	cb       func([]byte, error)
	deadline time.Time
}

// conn is one TCP connection between two nodes. A dialed one carries our
// requests and their replies; an accepted one carries a peer's requests and
// our replies.
type conn struct {
	links *Links
	peer  string
	inc   string // the peer's incarnation, from its hello (accepted links)
	addr  string
	nc    net.Conn // set before the writer or reader starts
	// seal and open are the ciphers of a keyed link's two directions, set
	// by the hello; the writer of the moment (write.go) alone uses seal, the
	// reader alone open. Nil without a key.
	seal, open *frameCipher

	mu      sync.Mutex
	pending map[uint64]call
	nextID  uint64
	err     error // set once closed
	done    chan struct{}
	served  chan struct{} // accepted links: closed once the reader stopped
	out     outbox        // under mu, but for what the writer of the moment owns
}

// newConn prepares a link; requests wait in its outbox while it connects.
func newConn(l *Links, peer, addr string) *conn {
	return &conn{
		links:   l,
		peer:    peer,
		addr:    addr,
		pending: make(map[uint64]call),
		done:    make(chan struct{}),
		out:     outbox{kick: make(chan struct{}, 1), drained: make(chan struct{}, 1)},
	}
}

func (lc *conn) request(k Kind, payload []byte, sent Counter, n float64, cb func([]byte, error)) bool {
	lc.mu.Lock()
	if lc.err != nil {
		err := lc.requestError(lc.err)
		lc.mu.Unlock()
		cb(nil, err)
		return false
	}
	if len(lc.out.queue) >= lc.links.cfg.Queue {
		lc.mu.Unlock()
		cb(nil, fmt.Errorf("%w: %s", ErrBackpressure, lc.peer))
		return false
	}
	lc.nextID++
	id := lc.nextID
	lc.pending[id] = call{cb: cb, deadline: time.Now().Add(lc.links.cfg.RequestTimeout)}
	if sent != nil {
		sent.Add(n)
	}
	// Queued under the lock, so that ids reach the wire in request order.
	lc.pushLocked(outFrame{k: k, id: id, payload: payload})
	return true
}

// reply queues the answer to request id. It never waits: the reader, which
// makes most answers, stops reading requests instead while the outbox is
// full (waitRoom), which pushes back on a peer that floods us.
func (lc *conn) reply(id uint64, payload []byte) {
	lc.mu.Lock()
	if lc.err != nil {
		lc.mu.Unlock()
		return
	}
	lc.pushLocked(outFrame{k: KindReply, id: id, payload: payload})
}

func (lc *conn) close(err error) {
	lc.mu.Lock()
	if lc.err != nil {
		lc.mu.Unlock()
		return
	}
	lc.err = err
	pending := lc.pending
	lc.pending = nil
	close(lc.done)
	nc := lc.nc
	lc.mu.Unlock()
	if nc != nil {
		nc.Close()
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
func (lc *conn) requestError(err error) error {
	if errors.Is(err, ErrTimeout) {
		return err
	}
	return fmt.Errorf("%w: %s: %v", ErrPeerDown, lc.peer, err)
}

// expire fails the requests that waited too long. A peer that does not
// answer in time is cut off or stuck: the connection is closed too, so the
// next request dials afresh instead of queueing behind a dead TCP stream
// that may take seconds of retransmission backoff to recover.
func (lc *conn) expire(now time.Time) {
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

func (lc *conn) dialAndRun() {
	nc, err := lc.links.dialer.Dial("tcp", lc.addr)
	if err != nil {
		lc.links.cfg.Logger.Warn("link dial failed", "peer", lc.peer, "addr", lc.addr, "err", err)
		lc.close(fmt.Errorf("%w: %s: %v", errDialFailed, lc.addr, err))
		return
	}
	lc.mu.Lock()
	if lc.err != nil {
		lc.mu.Unlock()
		nc.Close()
		return
	}
	lc.nc = nc
	lc.mu.Unlock()
	br := bufio.NewReaderSize(socketReader(nc), readBuffer)
	if err := lc.clientHandshake(br); err != nil {
		lc.links.cfg.Logger.Warn("link handshake failed", "peer", lc.peer, "err", err)
		lc.close(err)
		return
	}
	lc.startWriting()
	lc.readReplies(br)
}

func (lc *conn) serveAccepted() {
	l := lc.links
	br := bufio.NewReaderSize(socketReader(lc.nc), readBuffer)
	peer, why, err := lc.serverHandshake(br)
	<-l.handshakes
	if err != nil {
		if !errors.Is(err, ErrPeerDown) { // not our own shutdown
			l.refused.refuse(lc.nc.RemoteAddr(), peer.Name, why, err, time.Now())
		}
		lc.nc.Close()
		return
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		lc.nc.Close()
		return
	}
	lc.peer, lc.inc = peer.Name, peer.Inc
	var older []*conn
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
	lc.startWriting()
	lc.readRequests(br)
}

func (lc *conn) readReplies(br *bufio.Reader) {
	for {
		k, id, p, err := readFrame(br, MaxFrame, lc.open)
		if err == nil && k != KindReply {
			err = fmt.Errorf("%w: kind %d from a peer on a dialed link", ErrMalformed, k)
		}
		if err != nil {
			lc.logUnauthentic(err)
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

func (lc *conn) readRequests(br *bufio.Reader) {
	from := Peer{Name: lc.peer, Inc: lc.inc}
	batch := false // answers wait to go out together, in one write
	for {
		if !lc.waitRoom(&batch) {
			return
		}
		k, id, p, err := readFrame(br, MaxFrame, lc.open)
		if err != nil {
			if err != io.EOF && !lc.logUnauthentic(err) {
				lc.links.cfg.Logger.Debug("link closed", "peer", lc.peer, "err", err)
			}
			lc.close(ErrPeerDown)
			return
		}
		if !batch {
			batch = true
			lc.hold()
		}
		replied := false
		lc.links.handle(from, k, p, func(answer []byte) {
			if replied {
				panic("link: request answered twice")
			}
			replied = true
			lc.reply(id, answer)
		})
		if !frameBuffered(br) {
			// Every request read at once is served: their answers go.
			batch = false
			lc.release()
		}
	}
}

// logUnauthentic logs, as a warning, a link closed because a frame failed
// to open: someone on the path changed the bytes. It reports whether err
// was that.
func (lc *conn) logUnauthentic(err error) bool {
	if !errors.Is(err, errUnauthentic) {
		return false
	}
	lc.links.cfg.Logger.Warn("link closed: a frame failed authentication", "peer", lc.peer, "remote", lc.addr)
	return true
}
