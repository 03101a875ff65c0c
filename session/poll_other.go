//go:build !linux

package session

import "errors"

// Without epoll, a goroutine waits in a read on each socket, as it would
// with the WebSocket library: what poll_linux.go saves an idle connection is
// not saved here, but the frames are read and handled the same way.

// errWouldBlock is never returned here: a read waits for bytes.
var errWouldBlock = errors.New("session: nothing to read now")

type readBuffer struct{ b []byte }

func newReadBuffer() *readBuffer { return &readBuffer{b: make([]byte, readBufferSize)} }

// startReading starts the read side of c, whose reading is set.
func (c *Conn) startReading() { c.readDone(CloseReason{}, false) }

// rearm starts a goroutine that waits in the next read. c.mu is held.
func (c *Conn) rearm() error {
	go c.readReady()
	return nil
}

// linger: the next read waits for bytes anyway (rearm).
func (c *Conn) linger(*readBuffer) (CloseReason, bool) { return CloseReason{}, false }

// unwatch: nothing watches the socket but its reader, which the close ends.
func (c *Conn) unwatch() {}

// readSocket waits for bytes, reading through the connection the HTTP server
// handed over, which holds what it read past the upgrade request.
func (c *Conn) readSocket(rb *readBuffer) (int, error) { return c.nc.Read(rb.b) }
