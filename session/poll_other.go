//go:build !linux

package session

// Without epoll, a goroutine waits in a read on each socket, as it would
// with the WebSocket library: what poll_linux.go saves an idle connection is
// not saved here, but the frames are read and handled the same way.

type readBuffer struct{ b []byte }

func newReadBuffer() *readBuffer { return &readBuffer{b: make([]byte, readBufferSize)} }

// startReading starts the read side of c, whose reading is set.
func (c *Conn) startReading() { c.readDone(CloseReason{}, false) }

// rearm starts a goroutine that waits in the next read. c.mu is held.
func (c *Conn) rearm() error {
	go c.readReady()
	return nil
}

// shutSocket: the close need not wait for the reader, which holds nothing
// of the socket while a frame's handler runs.
func (c *Conn) shutSocket() {}

// unwatch: nothing watches the socket but its reader, which the close ends.
func (c *Conn) unwatch() {}

// readActive reads and acts on every frame until the connection ends,
// reading through the connection the HTTP server handed over, which holds
// what it read past the upgrade request.
func (c *Conn) readActive(rb *readBuffer) (CloseReason, bool) {
	for {
		n, err := c.nc.Read(rb.b)
		if err != nil || n == 0 {
			return CloseClientGone, true
		}
		if reason, ended := c.consume(rb.b[:n]); ended {
			return reason, true
		}
	}
}
