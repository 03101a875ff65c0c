package link

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/shardchat/shard/internal/rawsys"
)

// The write side of a link. At a few thousand messages a second no two
// frames wait together, and what a frame costs is the system calls and the
// goroutine wake-ups around it, not its bytes. So whoever queues a frame
// onto an idle link writes it at once, itself, with one non-blocking
// write(2): no writer goroutine is woken. A link that is busy (a write under
// way, or a socket that is full) keeps its frames in the outbox, and its
// writer goroutine writes them out in batches, one write(2) per batch. The
// reader of an accepted link holds its answers while it serves
// the requests that one read brought, and writes them out together.

// writeBuffer bounds one write: a batch is gathered up to it, then written.
const writeBuffer = 64 << 10

// busyPending: a request queued while more than this many others wait
// for their replies goes through the writer goroutine, whose wake-up lets
// the next few join it in one write: a link that busy shares its system
// calls better so. At the few hundred frames a second each link of a busy
// cluster carries, a frame is written at once, and no goroutine is woken
// for it. BenchmarkLinkRequest (bursts of 1024) and BenchmarkLinkRoundTrip
// (one at a time) measure the two.
const busyPending = 8

type outFrame struct {
	k       Kind
	id      uint64
	payload []byte
}

// outbox is a link's frames on their way out, under the conn's lock. One
// writer at a time (writing) owns the cipher and the bytes being written:
// the goroutine that queued a frame onto an idle link, or the link's writer
// goroutine once a write could not finish at once.
type outbox struct {
	queue []outFrame // waiting, in wire order; Config.Queue at most (requests), a read buffer's answers past it
	spare []outFrame // the queue's other buffer, swapped in when a writer takes the queue
	// ready: the hello is done, frames may go. writing: a writer is under
	// way, so whoever queues a frame leaves it to that one. held: the
	// reader is answering what one read brought, and writes it all once done.
	ready, writing, held bool
	kick                 chan struct{} // hands the writing to the writer goroutine
	drained              chan struct{} // a writer took the queue: the reader may read again
	raw                  syscall.RawConn

	// The writer of the moment owns these.
	taken []outFrame // taken from the queue, not yet encoded
	bytes []byte     // encoded, bytes[sent:] not yet written
	sent  int
	// tryWrite is the non-blocking write(2) of bytes[sent:], made once: a
	// closure per write would cost allocations. It leaves its outcome in
	// tried and tryErr.
	tryWrite func(fd uintptr) bool
	tried    int
	tryErr   error
}

// pushLocked queues f, unlocks lc, and writes it now when the link is idle.
func (lc *conn) pushLocked(f outFrame) {
	o := &lc.out
	o.queue = append(o.queue, f)
	if !o.ready || o.writing || o.held {
		lc.mu.Unlock()
		return
	}
	o.writing = true
	busy := len(lc.pending) > busyPending
	lc.mu.Unlock()
	if busy {
		o.kick <- struct{}{}
		return
	}
	lc.write(false)
}

// socketReader reads nc with rawsys when it is a socket: a read through
// net.Conn would wake the runtime's monitor thread at every message that
// finds the node idle (package rawsys says why).
func socketReader(nc net.Conn) io.Reader {
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			return rawsys.NewReader(raw)
		}
	}
	return nc
}

// startWriting lets the frames go once the hello is done: the writer
// goroutine takes what waited meanwhile.
func (lc *conn) startWriting() {
	var raw syscall.RawConn // nil: no non-blocking write, the writer goroutine writes everything
	if sc, ok := lc.nc.(syscall.Conn); ok {
		if r, err := sc.SyscallConn(); err == nil {
			raw = r
		}
	}
	lc.mu.Lock()
	o := &lc.out
	o.ready, o.raw = true, raw
	o.tryWrite = func(fd uintptr) bool {
		o.tried, o.tryErr = rawsys.Write(fd, o.bytes[o.sent:])
		return true // never wait here: the writer goroutine does
	}
	hand := len(o.queue) > 0 // nothing was written before: no writer yet
	o.writing = hand
	lc.mu.Unlock()
	go lc.writeLoop()
	if hand {
		o.kick <- struct{}{}
	}
}

// writeLoop writes for whoever could not finish a write at once.
func (lc *conn) writeLoop() {
	for {
		select {
		case <-lc.out.kick:
			lc.write(true)
		case <-lc.done:
			return
		}
	}
}

// write writes what is queued; the caller is the writer of the moment
// (writing). block: the writer goroutine, which writes until the queue is
// empty. Else one non-blocking write, and whatever is left (the socket was
// full, or more frames came meanwhile) is handed to the writer goroutine:
// a caller never waits for the peer, and never writes for others for long.
func (lc *conn) write(block bool) {
	o := &lc.out
	for {
		if o.sent == len(o.bytes) && !lc.encode() {
			return // nothing left: no longer writing
		}
		n, err := lc.writeOnce(block)
		if err != nil {
			lc.close(err)
			return
		}
		o.sent += n
		if !block && (o.sent < len(o.bytes) || lc.more()) {
			o.kick <- struct{}{} // cannot block: only the writer of the moment kicks
			return
		}
	}
}

// encode fills the write buffer with what is queued, up to writeBuffer, and
// reports whether there is anything to write; when not, the writer of the
// moment stops being one.
func (lc *conn) encode() bool {
	o := &lc.out
	if cap(o.bytes) > 4*writeBuffer {
		o.bytes = nil // a rare big frame: do not keep its buffer
	}
	o.bytes, o.sent = o.bytes[:0], 0
	if len(o.taken) == 0 {
		lc.mu.Lock()
		if len(o.queue) == 0 {
			o.writing = false
			lc.mu.Unlock()
			return false
		}
		o.taken, o.queue, o.spare = o.queue, o.spare[:0], nil
		lc.mu.Unlock()
		select {
		case o.drained <- struct{}{}:
		default:
		}
	}
	i := 0
	for ; i < len(o.taken) && len(o.bytes) < writeBuffer; i++ {
		f := o.taken[i]
		if lc.seal != nil {
			o.bytes = lc.seal.appendFrame(o.bytes, f.k, f.id, f.payload)
		} else {
			o.bytes = appendFrame(o.bytes, f.k, f.id, f.payload)
		}
	}
	rest := o.taken[i:]
	clear(o.taken[:i]) // the payloads are written: do not keep them
	if len(rest) == 0 {
		lc.mu.Lock()
		if o.spare == nil {
			o.spare = o.taken[:0] // the next take swaps it in
		}
		lc.mu.Unlock()
		rest = nil
	}
	o.taken = rest
	return true
}

// more reports whether frames wait to be written after the write buffer.
func (lc *conn) more() bool {
	if len(lc.out.taken) > 0 {
		return true
	}
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return len(lc.out.queue) > 0
}

// writeOnce writes bytes[sent:]: all of it when block, else what the
// socket takes now.
func (lc *conn) writeOnce(block bool) (int, error) {
	o := &lc.out
	if block || o.raw == nil {
		return lc.nc.Write(o.bytes[o.sent:])
	}
	if err := o.raw.Write(o.tryWrite); err != nil {
		return 0, err
	}
	switch err := o.tryErr; {
	case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR):
		return 0, nil
	case err != nil:
		return 0, err
	}
	return o.tried, nil
}

// hold keeps the answers queued from now on until release: the reader is
// serving the requests one read brought.
func (lc *conn) hold() {
	lc.mu.Lock()
	lc.out.held = true
	lc.mu.Unlock()
}

// release writes the answers held since hold, at once when the link is
// idle.
func (lc *conn) release() {
	lc.mu.Lock()
	o := &lc.out
	o.held = false
	if len(o.queue) == 0 || o.writing || !o.ready {
		lc.mu.Unlock()
		return
	}
	o.writing = true
	lc.mu.Unlock()
	lc.write(false)
}

// waitRoom waits, before the reader reads another request, until the
// outbox has room for its answer (Config.Queue), releasing what it held
// first; false once the link closed.
func (lc *conn) waitRoom(held *bool) bool {
	for {
		lc.mu.Lock()
		full, closed := len(lc.out.queue) >= lc.links.cfg.Queue, lc.err != nil
		lc.mu.Unlock()
		switch {
		case closed:
			return false
		case !full:
			return true
		case *held:
			*held = false
			lc.release()
			continue
		}
		select {
		case <-lc.out.drained:
		case <-lc.done:
			return false
		}
	}
}

// queued is how many frames wait in lc's outbox, not yet taken by a writer.
func (lc *conn) queued() int {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return len(lc.out.queue)
}

// frameBuffered reports whether br holds a whole frame already, which the
// reader can read without waiting for the peer.
func frameBuffered(br *bufio.Reader) bool {
	if br.Buffered() < 4 {
		return false
	}
	head, _ := br.Peek(4) // buffered: does not read
	return br.Buffered() >= 4+int(binary.BigEndian.Uint32(head))
}
