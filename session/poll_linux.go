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
// The reader of a busy client (one whose frame before, a ping or a pong
// included, came within activeLinger; a new connection's counts from its
// start) lets go of its socket once the client has been quiet for
// activeLinger. Until then it waits for the next bytes in the runtime's own
// netpoller, as a goroutine per connection would: a frame to a busy
// connection then costs one read(2) and one wake-up of its reader, where
// one through the poller costs an epoll_wait, a goroutine started and an
// epoll_ctl besides (at 5,000 msg/s on one node: 2.44 against 1.80 echo
// rounds per message, README, Performance). A quiet client's reader lets go
// at once.

// pollEvents is how many ready sockets one wait returns at most; more wait
// for the next.
const pollEvents = 256

// activeLinger is how long a reader stays with a busy client's socket after
// its last frame: a client that sends more often than this keeps its reader.
const activeLinger = time.Second

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

// shutSocket shuts both directions of c's socket: the client gets its FIN
// now, and the reader's next read finds the end, though the descriptor
// closes only once the reader has let go of it (readActive).
func (c *Conn) shutSocket() {
	if c.sock != nil {
		_ = c.sock.Control(func(fd uintptr) { _ = syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
	}
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

// readActive reads the socket's bytes and acts on them. A client that sent
// its frame before this one within activeLinger is busy: the reader stays
// with it until it has been quiet for activeLinger, then the socket goes
// back to the poller. One that was quiet goes back at once, once its bytes
// are read: staying would cost it a timer and a wake-up to leave, for
// nothing. ended reports that the reader must stop, for reason.
//
// The reads and the frames' handling happen inside the runtime's read
// (serve): between the calls of one RawConn.Read the runtime keeps what it
// learns of the socket's readiness, so after a short read, which took all
// the socket had, the reader can wait at once. A new RawConn.Read forgets
// it, and must read before it waits: the loop of net.Conn's Read, which
// pays a read(2) that finds nothing for every one that finds a frame. So a
// frame's handling must never close this socket itself: the close would
// wait for the read it runs in. It does not: the close sequence runs in the
// writer's goroutine, where it shuts the socket first (shutSocket), so that
// the client sees the close while a handler here still waits (a store
// call, a lookup), and the reader stops at its next frame or read.
func (c *Conn) readActive(rb *readBuffer) (reason CloseReason, ended bool) {
	rb.c, rb.ended, rb.reason = c, false, CloseReason{}
	defer func() { rb.c = nil }()
	rb.stay = time.Since(time.Unix(0, c.lastFrame.Load())) < activeLinger
	if !rb.stay {
		if err := c.sock.Read(rb.serveFn); err != nil {
			return CloseClientGone, true // the socket closed under the reader
		}
		return rb.reason, rb.ended
	}
	quietAt := time.Now().Add(activeLinger)
	for {
		if c.nc.SetReadDeadline(quietAt) != nil {
			return CloseClientGone, true
		}
		err := c.sock.Read(rb.serveFn)
		if err == nil {
			return rb.reason, true // a reader that stays stops only when the connection ends
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return CloseClientGone, true // the socket closed under the reader
		}
		if last := time.Unix(0, c.lastFrame.Load()); time.Since(last) < activeLinger {
			quietAt = last.Add(activeLinger)
			continue
		}
		// Quiet: the poller's reader takes no deadline, but the runtime
		// refuses any read past one.
		if c.nc.SetReadDeadline(time.Time{}) != nil {
			return CloseClientGone, true
		}
		return CloseReason{}, false
	}
}

// readBuffer is one reader's buffer, and the state of its serve, which the
// runtime calls: made once, so that a read allocates nothing.
type readBuffer struct {
	b       []byte
	c       *Conn // whose socket serve reads
	stay    bool  // serve waits for the next bytes when the socket has none
	ended   bool  // serve stopped because the connection ended, for reason
	reason  CloseReason
	serveFn func(fd uintptr) bool
}

func newReadBuffer() *readBuffer {
	r := &readBuffer{b: make([]byte, readBufferSize)}
	r.serveFn = r.serve
	return r
}

// serve reads the socket and acts on each whole frame, for as long as it
// has bytes; then false has the runtime wait for the next, when the reader
// stays. true: the connection ended (r.ended), or the reader goes.
func (r *readBuffer) serve(fd uintptr) bool {
	for {
		n, err := rawsys.Read(fd, r.b)
		switch {
		case err == syscall.EAGAIN:
			return !r.stay
		case err != nil || n == 0: // n == 0: the client shut its side
			r.reason, r.ended = CloseClientGone, true
			return true
		}
		if r.reason, r.ended = r.c.consume(r.b[:n]); r.ended {
			return true
		}
		if r.c.socketClosed.Load() { // closeSocket waits for this read to end
			r.reason, r.ended = CloseClientGone, true
			return true
		}
		if n < len(r.b) {
			return !r.stay // a short read took all there was
		}
	}
}
