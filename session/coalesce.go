package session

import (
	"bufio"
	"net"
	"sync"
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
	return &CoalescingConn{Conn: c}, nil
}

// 4 KiB: a burst of small chat frames; a larger frame simply passes through.
var coalesceBuffers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4096) }}

// CoalescingConn writes straight through, except between Hold and Release,
// when writes gather in a pooled buffer. The buffer is held only for the
// length of one burst, so an idle connection costs no buffer.
type CoalescingConn struct {
	net.Conn
	mu  sync.Mutex
	buf *bufio.Writer // non-nil while held
}

// Write implements net.Conn.
func (c *CoalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buf != nil {
		return c.buf.Write(p)
	}
	return c.Conn.Write(p)
}

// Hold starts gathering writes.
func (c *CoalescingConn) Hold() {
	c.mu.Lock()
	if c.buf == nil {
		c.buf = coalesceBuffers.Get().(*bufio.Writer)
		c.buf.Reset(c.Conn)
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
