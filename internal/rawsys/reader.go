package rawsys

import (
	"io"
	"os"
	"syscall"
)

// Reader reads a non-blocking socket with Read, and waits for its bytes in
// the runtime's netpoller (RawConn.Read), so that a goroutine reading it
// parks as one reading a net.Conn would; the socket's deadlines hold. One
// goroutine reads at a time.
type Reader struct {
	conn syscall.RawConn
	p    []byte
	n    int
	err  error
	fn   func(fd uintptr) bool // made once: a closure per read would allocate
}

// NewReader reads c.
func NewReader(c syscall.RawConn) *Reader {
	r := &Reader{conn: c}
	r.fn = func(fd uintptr) bool {
		r.n, r.err = Read(fd, r.p)
		return r.err != syscall.EAGAIN // nothing yet: wait for the socket
	}
	return r
}

// Read reads what the socket has, up to len(p), waiting until it has
// something; io.EOF once the peer closed it.
func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.p = p
	err := r.conn.Read(r.fn)
	r.p = nil
	switch {
	case err != nil:
		return 0, err
	case r.err != nil:
		return 0, os.NewSyscallError("read", r.err) // as net.Conn says it: "read: connection reset by peer"
	case r.n == 0:
		return 0, io.EOF
	}
	return r.n, nil
}
