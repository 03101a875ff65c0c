package session

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/shardchat/shard/internal/rawsys"
)

// The poller: one epoll instance and one goroutine watch the sockets of
// every connection of the process, and start a reader (readReady) for a
// socket that has bytes. Each socket is watched one-shot: after it wakes the
// poller it is not watched again until its reader has let it go, so one
// connection never has two readers, and an idle one has none.
//
// A reader lets go of a socket once its client has been quiet for
// activeLinger. Until then it waits for the next bytes in the runtime's own
// netpoller, as a goroutine per connection would: a frame to a busy
// connection then costs one read(2) and one wake-up of its reader, where
// one through the poller costs an epoll_wait, a goroutine started and an
// epoll_ctl besides (at 5,000 msg/s on one node: 2.44 against 1.80 echo
// rounds per message, README, Performance).

// pollEvents is how many ready sockets one wait returns at most; more wait
// for the next.
const pollEvents = 256

// activeLinger is how long a reader stays with a socket after its client's
// last frame: a client that sends more often than this keeps its reader.
const activeLinger = time.Second

// errWouldBlock: the socket has nothing to read now.
var errWouldBlock = syscall.EAGAIN

// sockets is the process's poller, started on first use (startPoller).
var (
	sockets      poller
	socketsStart sync.Once
	socketsErr   error
)

type poller struct {
	fd int
	// file holds the epoll instance open, and lets the runtime's netpoller
	// wait for it (an epoll descriptor is readable while it has events), so
	// that no thread blocks in epoll_wait: one that did woke the runtime's
	// monitor thread each time it came back (see package rawsys).
	file   *os.File
	raw    syscall.RawConn
	events []syscall.EpollEvent
	ready  int // events[:ready] came from the last collect
	err    error
	// collect takes the events ready now; false: none, the runtime waits.
	// Made once: a closure per wait would allocate.
	collect func(fd uintptr) bool
	mu      sync.Mutex
	conns   map[uint64]*Conn // by watch key; a key is never reused
	next    uint64
}

func startPoller() error {
	socketsStart.Do(func() {
		fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err == nil {
			err = syscall.SetNonblock(fd, true) // so that os.NewFile gives the netpoller its wait
		}
		if err != nil {
			socketsErr = fmt.Errorf("epoll: %w", err)
			return
		}
		p := &sockets
		p.fd, p.conns = fd, make(map[uint64]*Conn)
		p.file = os.NewFile(uintptr(fd), "epoll")
		if p.raw, err = p.file.SyscallConn(); err != nil {
			socketsErr = fmt.Errorf("epoll: %w", err)
			return
		}
		p.events = make([]syscall.EpollEvent, pollEvents)
		p.collect = func(fd uintptr) bool {
			p.ready, p.err = rawsys.EpollWait(fd, p.events)
			return p.err != nil || p.ready > 0
		}
		go p.run()
	})
	return socketsErr
}

// run waits for sockets with bytes and starts their readers. An event is
// known by the key the socket was watched with, not by its descriptor, so
// one that was on its way as its socket closed finds nothing, even if the
// descriptor is a new connection's by then.
func (p *poller) run() {
	for {
		err := p.raw.Read(p.collect)
		if err == nil {
			err = p.err
		}
		if err != nil {
			panic(fmt.Sprintf("session: epoll_wait: %v", err)) // the descriptor is this process's own: a bug
		}
		p.mu.Lock()
		for _, ev := range p.events[:p.ready] {
			if c := p.conns[uint64(uint32(ev.Fd))|uint64(uint32(ev.Pad))<<32]; c != nil {
				go c.readReady()
			}
		}
		p.mu.Unlock()
	}
}

// ctl applies op to c's socket, one-shot for input.
func (p *poller) ctl(c *Conn, op int) error {
	ev := syscall.EpollEvent{
		Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
		Fd:     int32(uint32(c.watchKey)),
		Pad:    int32(uint32(c.watchKey >> 32)),
	}
	var err error
	cerr := c.sock.Control(func(fd uintptr) { err = rawsys.EpollCtl(uintptr(p.fd), op, fd, &ev) })
	if cerr != nil {
		return cerr
	}
	return err
}

// startReading starts the read side of c, whose reading is set. Bytes the
// HTTP server read past the upgrade request are in its buffer, not in the
// socket, so they are read first, through the connection the server handed
// over; then the poller watches the socket.
func (c *Conn) startReading() {
	if c.sock == nil {
		c.readDone(CloseClientGone, true) // a socket without raw access cannot be watched
		return
	}
	if startPoller() != nil {
		c.readDone(CloseClientGone, true)
		return
	}
	c.readDone(c.readBuffered())
}

// readBuffered reads what the HTTP server's reader holds: with a deadline
// already past, a read returns buffered bytes and never waits for the socket.
func (c *Conn) readBuffered() (reason CloseReason, ended bool) {
	nc := c.nc
	if nc.SetReadDeadline(time.Unix(1, 0)) != nil {
		return CloseClientGone, true
	}
	rb := readBuffers.Get().(*readBuffer)
	defer readBuffers.Put(rb)
	for {
		n, err := nc.Read(rb.b)
		if reason, ended = c.consume(rb.b[:n]); ended {
			return reason, true
		}
		if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
			break
		}
		if err != nil {
			return CloseClientGone, true
		}
	}
	if nc.SetReadDeadline(time.Time{}) != nil {
		return CloseClientGone, true
	}
	return CloseReason{}, false
}

// rearm has the poller watch c's socket, again after its reader has read,
// or for the first time. c.mu is held.
func (c *Conn) rearm() error {
	p := &sockets // started by startReading
	if c.watchKey != 0 {
		return p.ctl(c, syscall.EPOLL_CTL_MOD)
	}
	p.mu.Lock()
	p.next++
	c.watchKey = p.next
	p.conns[c.watchKey] = c
	p.mu.Unlock()
	return p.ctl(c, syscall.EPOLL_CTL_ADD)
}

// unwatch stops watching c's socket, before it closes.
func (c *Conn) unwatch() {
	if c.watchKey == 0 {
		return
	}
	p := &sockets
	_ = p.ctl(c, syscall.EPOLL_CTL_DEL)
	p.mu.Lock()
	delete(p.conns, c.watchKey)
	p.mu.Unlock()
}

// linger waits in the runtime's netpoller for the client's next bytes and
// acts on them, until the client has been quiet for activeLinger; then the
// socket goes back to the poller. ended reports that the reader must stop.
func (c *Conn) linger(rb *readBuffer) (reason CloseReason, ended bool) {
	last := time.Unix(0, c.lastFrame.Load())
	if time.Since(last) >= activeLinger {
		return CloseReason{}, false
	}
	if c.nc.SetReadDeadline(last.Add(activeLinger)) != nil {
		return CloseClientGone, true
	}
	for {
		n, err := c.waitSocket(rb)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			last = time.Unix(0, c.lastFrame.Load())
			if time.Since(last) < activeLinger {
				err = c.nc.SetReadDeadline(last.Add(activeLinger))
				if err != nil {
					return CloseClientGone, true
				}
				continue
			}
			// Quiet: the poller's reads take no deadline, but the runtime
			// refuses any read past one.
			if c.nc.SetReadDeadline(time.Time{}) != nil {
				return CloseClientGone, true
			}
			return CloseReason{}, false
		}
		if err != nil || n == 0 {
			return CloseClientGone, true
		}
		if reason, ended = c.consume(rb.b[:n]); ended {
			return reason, true
		}
	}
}

// readBuffer is one read's buffer. It carries the callbacks handed to the
// runtime, so that a read allocates nothing.
type readBuffer struct {
	b      []byte
	n      int
	err    error
	fn     func(fd uintptr) bool
	waitFn func(fd uintptr) bool
}

func newReadBuffer() *readBuffer {
	r := &readBuffer{b: make([]byte, readBufferSize)}
	r.fn, r.waitFn = r.read, r.wait
	return r
}

// wait reads once the socket has bytes: false has the runtime wait for
// them. It must read before it waits, even after a short read: the runtime
// forgets what it knew of the socket's readiness as each read through it
// begins, so bytes that came before would never wake the wait.
func (r *readBuffer) wait(fd uintptr) bool {
	r.read(fd)
	return r.err != syscall.EAGAIN
}

// read makes one non-blocking read; true: the runtime must not wait for the
// socket, errWouldBlock says it had nothing.
func (r *readBuffer) read(fd uintptr) bool {
	r.n, r.err = rawsys.Read(fd, r.b)
	return true
}

// readSocket reads what the socket has now, without waiting.
func (c *Conn) readSocket(rb *readBuffer) (int, error) {
	return rb.result(c.sock.Read(rb.fn))
}

// waitSocket reads the socket's next bytes, waiting for them until the
// read deadline.
func (c *Conn) waitSocket(rb *readBuffer) (int, error) {
	return rb.result(c.sock.Read(rb.waitFn))
}

// result is what a read through the runtime got: the runtime's error (a
// closed socket, a deadline), else the read's.
func (r *readBuffer) result(err error) (int, error) {
	if err == nil {
		err = r.err
	}
	if err != nil {
		return 0, err
	}
	return r.n, nil
}
