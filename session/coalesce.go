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
	framed    bool            // the HTTP exchange is over: every Write is WebSocket frames
	frameLeft uint64          // payload bytes of the last frame begun that later Writes carry
	closeSent bool            // a close frame went out: no data frame may follow it
	rawConn   syscall.RawConn // nil when the socket gives no raw access: WriteTextNow never can
}

// Framed tells the connection that the upgrade has been answered: from now
// on every Write is WebSocket frames, whose headers it follows to see the
// close frame go out.
func (c *CoalescingConn) Framed() {
	c.mu.Lock()
	c.framed = true
	c.mu.Unlock()
}

// Write implements net.Conn.
func (c *CoalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.framed && !c.closeSent {
		c.followFrames(p)
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

// followFrames reads the frame headers in p, a Write of the WebSocket
// library, and notes a close frame. A header is known by where it falls,
// never by a byte's value: the library writes a long frame's header with
// the first part of its payload and the rest in a second Write, which may
// start with any byte (0x88, a close frame's first, is a UTF-8 continuation
// byte). Each of its Writes begins with a header or continues the frame
// before it, and a header never spans two (WriteTextNow's frames and their
// tails bypass Write and leave it between frames).
func (c *CoalescingConn) followFrames(p []byte) {
	for len(p) > 0 {
		if c.frameLeft > 0 {
			n := min(c.frameLeft, uint64(len(p)))
			c.frameLeft -= n
			p = p[n:]
			continue
		}
		opcode, header, length, ok := parseFrameHeader(p)
		if !ok || opcode == opClose {
			// A header cut short would be a library this code does not know:
			// take it for a close, which costs only the fast path.
			c.closeSent = true
			return
		}
		c.frameLeft = length
		p = p[header:]
	}
}

// opClose is the opcode of a close frame (RFC 6455 5.5.1).
const opClose = 8

// parseFrameHeader reads the frame header at the start of p (RFC 6455 5.2):
// its opcode, its size and the payload's.
func parseFrameHeader(p []byte) (opcode byte, header int, length uint64, ok bool) {
	if len(p) < 2 {
		return 0, 0, 0, false
	}
	header = 2
	switch p[1] & 0x7f {
	case 126:
		header = 4
	case 127:
		header = 10
	}
	if p[1]&0x80 != 0 { // masked: a client's frame, never a server's
		header += 4
	}
	if len(p) < header {
		return 0, 0, 0, false
	}
	switch length = uint64(p[1] & 0x7f); length {
	case 126:
		length = uint64(binary.BigEndian.Uint16(p[2:]))
	case 127:
		length = binary.BigEndian.Uint64(p[2:])
	}
	return p[0] & 0x0f, header, length, true
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
