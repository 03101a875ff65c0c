package session

import (
	"bufio"
	"encoding/binary"
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

// CoalescingConn writes straight through, except between Hold and Release,
// when writes gather in a pooled buffer. The buffer is held only for the
// length of one burst, so an idle connection costs no buffer.
type CoalescingConn struct {
	net.Conn
	mu        sync.Mutex
	buf       *bufio.Writer   // non-nil while held
	tail      []byte          // what WriteTextNow left unwritten: the next write sends it first
	closeSent bool            // a close frame went out: no data frame may follow it
	rawConn   syscall.RawConn // nil when the socket gives no raw access: WriteTextNow never can
}

// closeFrameStart is the first byte of a final close frame. The WebSocket
// library writes each control frame with one Write, and every data frame
// starts with its header or, written apart from it, with a JSON payload's
// '{': so a Write that starts with this byte is a close frame.
const closeFrameStart = 0x88

// Write implements net.Conn.
func (c *CoalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(p) > 0 && p[0] == closeFrameStart {
		c.closeSent = true
	}
	if c.buf != nil {
		return c.buf.Write(p)
	}
	if len(c.tail) > 0 {
		n, err := c.Conn.Write(c.tail)
		c.tail = c.tail[n:]
		if err != nil {
			return 0, err
		}
		c.tail = nil
	}
	return c.Conn.Write(p)
}

// Hold starts gathering writes. deadline bounds the tail of an earlier
// frame, which goes first: the library sets its own deadline only as it
// writes, and may write nothing before Release.
func (c *CoalescingConn) Hold(deadline time.Time) {
	c.mu.Lock()
	if c.buf == nil {
		c.buf = coalesceBuffers.Get().(*bufio.Writer)
		c.buf.Reset(c.Conn)
		if len(c.tail) > 0 {
			_ = c.Conn.SetWriteDeadline(deadline)
			_, _ = c.buf.Write(c.tail) // an error stays in buf and Release returns it
			c.tail = nil
		}
	}
	c.mu.Unlock()
}

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
	w.b = appendTextFrame(w.b[:0], payload)
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

// appendTextFrame appends a final, unmasked text frame (RFC 6455 5.2): what
// a server sends.
func appendTextFrame(b, payload []byte) []byte {
	const finText = 0x81
	switch n := len(payload); {
	case n < 126:
		b = append(b, finText, byte(n))
	case n <= 0xFFFF:
		b = append(b, finText, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, finText, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}
