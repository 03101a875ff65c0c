// Package session runs one client WebSocket connection: frames in, frames out,
// limits and keepalive. It never decides where a message goes: that is the router's job.
package session

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shardchat/shard/protocol"
)

// Config holds the limits of one client connection.
type Config struct {
	// MaxFrame is the largest client frame in bytes; a larger one closes the
	// connection with 1009. Default 65536.
	MaxFrame int
	// Rate is the number of client frames (messages, pings and pongs) per
	// second per connection; a token bucket with a burst of twice that,
	// starting full. Default 200.
	Rate int
	// SendQueue is how many outgoing frames may wait; past that the
	// connection is closed as a slow consumer (1008). Default 1024.
	SendQueue int
	// PingInterval is how often the server pings; a connection from which
	// nothing arrives for twice as long is closed. Default 25s.
	PingInterval time.Duration
	// WriteTimeout bounds one write to the socket. Default 10s.
	WriteTimeout time.Duration
}

// Defaults: those of --max-frame, --rate, --send-queue and --ping-interval
// (the README's Configuration table), and the write bound of
// docs/protocol.md §11.
const (
	DefaultMaxFrame     = 65536
	DefaultRate         = 200
	DefaultSendQueue    = 1024
	DefaultPingInterval = 25 * time.Second
	DefaultWriteTimeout = 10 * time.Second
)

// WithDefaults fills the zero fields of c with the defaults.
func (c Config) WithDefaults() Config {
	if c.MaxFrame <= 0 {
		c.MaxFrame = DefaultMaxFrame
	}
	if c.Rate <= 0 {
		c.Rate = DefaultRate
	}
	if c.SendQueue <= 0 {
		c.SendQueue = DefaultSendQueue
	}
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	return c
}

// closeGrace bounds how long a close frame may take to leave: a peer that
// cannot take it in a second is not reading at all.
const closeGrace = time.Second

// Handler receives the frames that the router must act on: send, join and
// leave. For each it must call Conn.Answer exactly once, from any goroutine.
// Closed comes once the connection stops reading, Ended once nothing of it
// runs any more and its socket is closed.
type Handler interface {
	HandleFrame(c *Conn, f *protocol.Frame)
	Closed(c *Conn, reason CloseReason)
	Ended(c *Conn)
}

// Conn is one client connection. A reader runs only while its socket has
// bytes (reader.go); a frame sent to an idle connection is written by the
// sender, others wait for a writer goroutine that runs only while frames
// are queued (writer.go); pings come from a timer. An idle connection costs
// no goroutine, no buffer and no queue, which is what lets one node hold
// hundreds of thousands of them.
type Conn struct {
	id   uint64
	user string

	cfg Config
	nc  net.Conn        // the connection the HTTP server handed over: reads what it buffered, closes the socket
	raw *CoalescingConn // nil when the listener does not coalesce
	h   Handler
	// closeBegun: Close has been called. The reader checks it on every
	// frame, without the lock.
	closeBegun atomic.Bool

	mu       sync.Mutex
	closed   bool
	reason   CloseReason
	queue    [][]byte      // frames waiting for the writer, at most cfg.SendQueue
	spare    [][]byte      // a small drained queue kept for reuse
	writing  bool          // a writer goroutine, or writeNow, owns the socket's data writes
	tail     bool          // raw holds the unwritten tail of a frame writeNow began
	sealed   bool          // Send refuses: the close frame is on its way
	serving  bool          // Serve has set nc: writers may run
	finished bool          // the reader and the close sequence are over: never touch the socket
	parts    int           // of the reader and the close sequence, how many are over
	inflight int           // frames handed to the Handler and not yet answered
	draining bool          // answer new frames with unavailable
	drained  chan struct{} // closed when inflight drops to 0 while draining
	space    chan struct{} // signalled when the writer empties the queue, and on Close; made by WaitQueue

	reading   bool // a reader has the socket; only it may stop reading
	readEnded bool // the reader has stopped for good
	// socketClosed: the close sequence has closed (or is closing) the
	// socket. Set under mu; atomic so that the reader can check it after
	// every burst of frames without taking mu.
	socketClosed atomic.Bool

	readerStop chan struct{} // closed when the reader stops, made by the close sequence if it must wait for that
	lastFrame  atomic.Int64  // when the last whole frame came, in Unix nanoseconds
	pingTimer  *time.Timer
	lastPing   int64           // Unix nanoseconds; ping timer only
	pings      sync.WaitGroup  // pings being written
	watchKey   uint64          // the socket's key with the poller; 0: not watched
	sock       syscall.RawConn // the socket, for reads that never wait; nil where reads wait

	// Reader only.
	in      []byte // the start of a frame not yet whole
	msg     []byte // a fragmented message so far
	msgKind byte   // its opcode; 0: no message is fragmented
	tokens  float64
	refill  int64 // Unix nanoseconds
}

// New prepares a connection before its socket exists, so that it can be
// registered, and its welcome queued, before the upgrade. Nothing is written
// before Serve, but Send may already queue frames.
func New(id uint64, user string, cfg Config) *Conn {
	cfg = cfg.WithDefaults()
	return &Conn{
		id:     id,
		user:   user,
		cfg:    cfg,
		tokens: float64(2 * cfg.Rate),
		refill: time.Now().UnixNano(),
	}
}

// ID is the connection's number, unique on this node.
func (c *Conn) ID() uint64 { return c.id }

// User is the user this connection was opened for.
func (c *Conn) User() string { return c.user }

// Cut closes the connection as a slow consumer (1008): what it was owed
// could not be held for it.
func (c *Conn) Cut() { c.Close(CloseSlowConsumer) }

// Answer queues the answer to a frame given to the Handler; nil: the frame
// is owed none, but it has been dealt with all the same (see drain).
func (c *Conn) Answer(frame []byte) {
	if frame != nil {
		c.Send(frame)
	}
	c.mu.Lock()
	c.inflight--
	if c.inflight == 0 && c.drained != nil {
		close(c.drained)
		c.drained = nil
	}
	c.mu.Unlock()
}

// Close ends the connection for reason; the first reason wins. Safe from
// any goroutine, at any time, also after the connection ended.
func (c *Conn) Close(reason CloseReason) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.reason = reason
	if !reason.graceful() {
		c.sealed = true
		c.queue = nil
	}
	c.closeBegun.Store(true)
	if c.space != nil { // a WaitQueue may wait: it sees closed
		select {
		case c.space <- struct{}{}:
		default:
		}
	}
	if reason == CloseSlowConsumer && c.raw != nil && !c.finished {
		// The writer may be stuck in a write to a peer that does not read.
		_ = c.raw.SetWriteDeadline(time.Now().Add(closeGrace))
	}
	start := c.startWriterLocked()
	c.mu.Unlock()
	if start {
		go c.write()
	}
}

// Shutdown stops taking new frames, waits until every frame already read
// has been answered (or ctx ends), then closes with reason.
func (c *Conn) Shutdown(ctx context.Context, reason CloseReason) {
	c.mu.Lock()
	c.draining = true
	var wait chan struct{}
	if c.inflight > 0 {
		if c.drained == nil {
			c.drained = make(chan struct{})
		}
		wait = c.drained
	}
	c.mu.Unlock()
	if wait != nil {
		select {
		case <-wait:
		case <-ctx.Done():
		}
	}
	c.Close(reason)
}

// Reason is why the connection closed; zero while it is open.
func (c *Conn) Reason() CloseReason {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

// Serve starts the connection on nc, a connection the HTTP server has
// upgraded, and returns: from now on it reads when its socket has bytes,
// and writes what is sent. h hears of its frames, of its close and of its
// end. raw is the connection under nc, from a CoalescingListener: every
// frame is written through it.
func (c *Conn) Serve(nc net.Conn, raw *CoalescingConn, h Handler) {
	c.lastFrame.Store(time.Now().UnixNano())
	c.mu.Lock()
	c.nc, c.raw, c.h = nc, raw, h
	c.sock = raw.rawConn
	c.serving = true
	c.reading = true
	c.lastPing = time.Now().UnixNano()
	c.pingTimer = time.AfterFunc(c.cfg.PingInterval, c.ping)
	start := c.startWriterLocked()
	c.mu.Unlock()
	if start {
		go c.write()
	}
	c.startReading()
}

// partDone marks the reader, or the close sequence, over; after both, the
// handler hears that the connection has ended.
func (c *Conn) partDone() {
	c.mu.Lock()
	c.parts++
	last := c.parts == 2
	c.finished = last
	c.mu.Unlock()
	if !last {
		return
	}
	c.pingTimer.Stop()
	c.pings.Wait()
	c.h.Ended(c)
}

// takeToken applies the rate limit; a refused frame takes no token.
func (c *Conn) takeToken() bool {
	now := time.Now().UnixNano()
	rate := float64(c.cfg.Rate)
	c.tokens += float64(now-c.refill) / float64(time.Second) * rate
	c.refill = now
	if burst := 2 * rate; c.tokens > burst {
		c.tokens = burst
	}
	if c.tokens < 1 {
		return false
	}
	c.tokens--
	return true
}
