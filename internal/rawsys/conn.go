package rawsys

import (
	"net"
	"os"
	"sync"
	"syscall"
)

// Conn is a net.Conn whose reads and writes are this package's, for a
// socket that a library reads and writes through net.Conn: pgx's to
// PostgreSQL, whose every call would otherwise wake the runtime's monitor
// thread when the node was idle, several times a stored message. It waits
// for the socket in the runtime's netpoller, as net.Conn does, so its
// deadlines hold (pgx cancels a query by moving them). Close, the deadlines
// and the addresses are the wrapped conn's. Reads, and writes, may come
// from several goroutines; each waits for the one before.
type Conn struct {
	net.Conn
	raw syscall.RawConn

	readMu sync.Mutex
	reader *Reader

	writeMu  sync.Mutex
	writing  []byte // what the write under way has left
	written  int
	writeErr error
	writeFn  func(fd uintptr) bool // made once: a closure per write would allocate
}

// Wrap gives c raw reads and writes, when it is a socket; else it returns c
// as it is.
func Wrap(c net.Conn) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	w := &Conn{Conn: c, raw: raw, reader: NewReader(raw)}
	w.writeFn = w.writeSome
	return w
}

// Read reads what the socket has, up to len(p), waiting until it has
// something; io.EOF once the peer closed it. A read of nothing is no call,
// and no error even once the Conn is closed.
func (c *Conn) Read(p []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	n, err := c.reader.Read(p)
	return n, c.opError("read", err)
}

// opError gives an error of a system call the addresses net.Conn's would
// have: "read tcp 127.0.0.1:5000->127.0.0.1:5432: read: connection reset by
// peer". The runtime's own (a deadline, a closed conn) already have them.
func (c *Conn) opError(op string, err error) error {
	if _, ok := err.(*os.SyscallError); !ok {
		return err
	}
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// Write writes all of p, waiting for room in the socket as it must.
func (c *Conn) Write(p []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.writing, c.written, c.writeErr = p, 0, nil
	err := c.raw.Write(c.writeFn)
	n := c.written
	c.writing = nil
	switch {
	case err != nil:
		return n, err
	case c.writeErr != nil:
		return n, c.opError("write", os.NewSyscallError("write", c.writeErr))
	}
	return n, nil
}

// writeSome writes what the socket takes of c.writing; false: it is full,
// wait until it has room.
func (c *Conn) writeSome(fd uintptr) bool {
	for c.written < len(c.writing) {
		n, err := Write(fd, c.writing[c.written:])
		switch {
		case err == syscall.EAGAIN:
			return false
		case err != nil:
			c.writeErr = err
			return true
		}
		c.written += n
	}
	return true
}
