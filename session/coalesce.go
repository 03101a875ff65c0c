package session

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// CoalescingListener wraps a listener so that a connection's writer can
// gather a burst of WebSocket frames into one system call: the WebSocket
// library writes every frame straight to its net.Conn, which under fan-out
// load costs one write(2) per message.
type CoalescingListener struct {
	net.Listener
}

// Accept returns a *CoalescingConn.
func (l CoalescingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := &CoalescingConn{Conn: c}
	if sc, ok := c.(syscall.Conn); ok && canWriteFD {
		cc.rawConn, _ = sc.SyscallConn()
	}
	return cc, nil
}

// 4 KiB: a burst of small chat frames; a larger frame simply passes through.
var coalesceBuffers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4096) }}

// CoalescingConn writes the WebSocket frames of a served connection
// (WriteFrame, WriteTextNow) straight through, except between Hold and
// Release, when they gather in a pooled buffer. The buffer is held only for
// the length of one burst, so an idle connection costs no buffer. Before the
// upgrade is answered it is a plain net.Conn.
type CoalescingConn struct {
	net.Conn
	mu        sync.Mutex
	buf       *bufio.Writer   // non-nil while held
	tail      []byte          // what WriteTextNow left unwritten: the next write sends it first
	closeSent bool            // a close frame went out: no frame may follow it
	rawConn   syscall.RawConn // nil when the socket gives no raw access: WriteTextNow never can
}

// Hold starts gathering frames, which Release writes by deadline. The tail
// of an earlier frame goes first.
func (c *CoalescingConn) Hold(deadline time.Time) {
	c.mu.Lock()
	if c.buf == nil {
		_ = c.Conn.SetWriteDeadline(deadline)
		c.buf = coalesceBuffers.Get().(*bufio.Writer)
		c.buf.Reset(c.Conn)
		if len(c.tail) > 0 {
			_, _ = c.buf.Write(c.tail) // an error stays in buf and Release returns it
			c.tail = nil
		}
	}
	c.mu.Unlock()
}

// WriteFrame writes one whole frame: into the burst being gathered, or
// else straight to the socket by deadline, after the tail of an earlier
// frame. A frame is written whole under the lock, so a ping or a pong from
// another goroutine falls between two frames, never inside one. Nothing
// follows a close frame.
func (c *CoalescingConn) WriteFrame(opcode byte, payload []byte, deadline time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeSent {
		return errCloseSent
	}
	c.closeSent = opcode == opClose
	if c.buf != nil {
		var header [maxServerHeader]byte
		_, _ = c.buf.Write(appendFrameHeader(header[:0], opcode, len(payload)))
		_, err := c.buf.Write(payload)
		return err
	}
	if err := c.Conn.SetWriteDeadline(deadline); err != nil {
		return err
	}
	if len(c.tail) > 0 {
		n, err := c.Conn.Write(c.tail)
		c.tail = c.tail[n:]
		if err != nil {
			return err
		}
		c.tail = nil
	}
	w := frameWrites.Get().(*frameWrite)
	defer w.release()
	w.b = append(appendFrameHeader(w.b[:0], opcode, len(payload)), payload...)
	_, err := c.Conn.Write(w.b)
	return err
}

// errCloseSent refuses a frame after the close frame.
var errCloseSent = errors.New("session: the close frame has been sent")

// Release writes what was gathered and returns to writing straight through.
func (c *CoalescingConn) Release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buf == nil {
		return nil
	}
	err := c.buf.Flush()
	c.buf.Reset(nil)
	coalesceBuffers.Put(c.buf)
	c.buf = nil
	return err
}

// WriteTextNow writes payload as one WebSocket text frame with a single
// non-blocking system call, from the caller's goroutine. This spares a
// delivery to an idle connection the hand-off to a writer goroutine, which
// costs more than the write itself. The caller must own the connection's
// data writes and have nothing queued before this frame.
//
// It returns taken false when the frame must be queued instead: a burst is
// being gathered, an earlier tail is unwritten, a close frame has gone out,
// the socket has no room at all, or it gives no raw access. With taken true
// the frame is written, or the socket took part of it and the rest waits
// here (tail true): a writer must then set a write deadline and call Hold
// and Release, which send it before anything else.
func (c *CoalescingConn) WriteTextNow(payload []byte) (taken, tail bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buf != nil || len(c.tail) > 0 || c.closeSent || c.rawConn == nil {
		return false, false, nil
	}
	w := frameWrites.Get().(*frameWrite)
	defer w.release()
	w.b = append(appendFrameHeader(w.b[:0], opText, len(payload)), payload...)
	// Control, not Write: one non-blocking write never waits, so the
	// poller's deadline (left by the last blocking write) does not apply.
	err = c.rawConn.Control(w.fn)
	if err != nil {
		return true, false, err
	}
	switch {
	case w.err == syscall.EAGAIN || w.err == syscall.EINTR || w.n <= 0 && w.err == nil:
		return false, false, nil // no room at all: queue it, by reference
	case w.err != nil:
		return true, false, w.err
	case w.n < len(w.b):
		c.tail = append([]byte(nil), w.b[w.n:]...)
		return true, true, nil
	}
	return true, false, nil
}

// frameWrite is one attempt at a non-blocking write. Pooled, so that neither
// its buffer nor the callback handed to the runtime allocates per frame.
type frameWrite struct {
	b   []byte
	n   int
	err error
	fn  func(fd uintptr)
}

var frameWrites = sync.Pool{New: func() any {
	w := &frameWrite{b: make([]byte, 0, 512)}
	w.fn = w.write
	return w
}}

// write makes one attempt and never waits for the socket to drain.
func (w *frameWrite) write(fd uintptr) {
	w.n, w.err = writeFD(fd, w.b)
}

func (w *frameWrite) release() {
	if cap(w.b) > 8<<10 {
		return // a rare large frame: do not keep its buffer
	}
	w.err = nil
	frameWrites.Put(w)
}

// maxServerHeader is the longest header of a server's frame: unmasked, with
// a 64-bit length (RFC 6455 5.2).
const maxServerHeader = 10

// appendFrameHeader appends the header of a final, unmasked frame (RFC 6455
// 5.2): what a server sends.
func appendFrameHeader(b []byte, opcode byte, n int) []byte {
	const fin = 0x80
	switch {
	case n < 126:
		return append(b, fin|opcode, byte(n))
	case n <= 0xFFFF:
		return binary.BigEndian.AppendUint16(append(b, fin|opcode, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, fin|opcode, 127), uint64(n))
	}
}

// closePayload is the payload of a close frame (RFC 6455 5.5.1): the code,
// then the reason, cut to what a control frame holds.
func closePayload(code int, text string) []byte {
	p := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(text)), uint16(code))
	p = append(p, text...)
	return p[:min(len(p), maxControlPayload)]
}
