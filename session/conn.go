// Package session runs one client WebSocket connection: frames in, frames out,
// limits and keepalive. It never decides where a message goes: that is the router's job.
package session

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/fasthttp/websocket"

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
type Handler interface {
	HandleFrame(c *Conn, f *protocol.Frame)
	Closed(c *Conn, reason CloseReason)
}

// Conn is one client connection. Its reader runs in the goroutine that
// calls Serve. A frame sent to an idle connection is written by the sender;
// others wait for a writer goroutine that runs only while frames are
// queued; pings come from a timer. An idle connection costs one goroutine
// and no queue, which is what lets one node hold tens of thousands of them
// (see writer.go).
type Conn struct {
	id   uint64
	user string

	cfg     Config
	ws      *websocket.Conn
	raw     *CoalescingConn // nil when the listener does not coalesce
	closing chan struct{}   // closed by Close
	done    chan struct{}   // closed once the close sequence has closed the socket

	mu       sync.Mutex
	closed   bool
	reason   CloseReason
	queue    [][]byte      // frames waiting for the writer, at most cfg.SendQueue
	spare    [][]byte      // a small drained queue kept for reuse
	writing  bool          // a writer goroutine, or writeNow, owns the socket's data writes
	tail     bool          // raw holds the unwritten tail of a frame writeNow began
	sealed   bool          // Send refuses: the close frame is on its way
	serving  bool          // Serve has set ws: writers may run
	finished bool          // Serve returned: the socket may be recycled, never touch it
	inflight int           // frames handed to the Handler and not yet answered
	draining bool          // answer new frames with unavailable
	drained  chan struct{} // closed when inflight drops to 0 while draining
	space    chan struct{} // signalled when the writer empties the queue; made by WaitQueue

	readerDone chan struct{} // closed when the reader has stopped
	pingTimer  *time.Timer
	pings      sync.WaitGroup // pings being written

	// Reader goroutine only.
	tokens float64
	refill time.Time
}

// New prepares a connection before its socket exists, so that it can be
// registered, and its welcome queued, before the upgrade. Nothing is written
// before Serve, but Send may already queue frames.
func New(id uint64, user string, cfg Config) *Conn {
	cfg = cfg.WithDefaults()
	return &Conn{
		id:         id,
		user:       user,
		cfg:        cfg,
		closing:    make(chan struct{}),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
		tokens:     float64(2 * cfg.Rate),
		refill:     time.Now(),
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
	close(c.closing)
	if reason == CloseSlowConsumer && c.ws != nil && !c.finished {
		// The writer may be stuck in a write to a peer that does not read.
		_ = c.ws.NetConn().SetWriteDeadline(time.Now().Add(closeGrace))
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

// Serve runs the connection on ws until it ends. It reads in the calling
// goroutine and returns only when the writer and the pings have stopped, so
// that the socket is never touched after the HTTP server recycles it. raw is
// the connection under ws when the listener coalesces writes, else nil.
func (c *Conn) Serve(ws *websocket.Conn, raw *CoalescingConn, h Handler) {
	ws.SetReadLimit(int64(c.cfg.MaxFrame))
	// Control frames take tokens like messages (the handlers run in the
	// reader): a ping over the rate gets no pong, and a flood of pongs
	// empties the bucket for the frames after it.
	ws.SetPongHandler(func(string) error {
		c.takeToken()
		return c.extendDeadline()
	})
	ping := ws.PingHandler()
	ws.SetPingHandler(func(data string) error {
		if err := c.extendDeadline(); err != nil || !c.takeToken() {
			return err
		}
		return ping(data)
	})
	if raw != nil {
		raw.Framed() // nothing but frames from now on: the upgrade is answered
	}
	c.mu.Lock()
	c.ws, c.raw = ws, raw
	c.serving = true
	c.pingTimer = time.AfterFunc(c.cfg.PingInterval, c.ping)
	start := c.startWriterLocked()
	c.mu.Unlock()
	if start {
		go c.write()
	}
	reason := c.readLoop(h)
	close(c.readerDone)
	c.Close(reason)
	h.Closed(c, c.Reason())
	<-c.done
	c.mu.Lock()
	c.finished = true
	c.mu.Unlock()
	c.pingTimer.Stop()
	c.pings.Wait()
}

func (c *Conn) extendDeadline() error {
	return c.ws.SetReadDeadline(time.Now().Add(2 * c.cfg.PingInterval))
}

func (c *Conn) readLoop(h Handler) CloseReason {
	if c.extendDeadline() != nil {
		return CloseClientGone
	}
	var scratch []byte
	for {
		kind, p, err := c.ws.ReadMessage()
		if err != nil {
			return readErrorReason(err)
		}
		if c.extendDeadline() != nil {
			return CloseClientGone
		}
		select {
		case <-c.closing:
			// Closing already (a drain, a cut): the frame is not acted on,
			// but a frame with an id is still owed its answer. Keep reading
			// until the client's close, so the socket ends without a reset.
			switch f, ferr := protocol.DecodeFrame(p); {
			case ferr != nil:
				if ferr.ID != "" {
					c.Send(protocol.AppendError(nil, ferr.ID, ferr.Code, ferr.Message))
				}
			case f.ID == "":
			case f.Type == protocol.TypePing:
				c.Send(protocol.AppendPong(nil, f.ID))
			default:
				c.Send(protocol.AppendError(nil, f.ID, protocol.CodeUnavailable, "this connection is closing; reconnect"))
			}
			continue
		default:
		}
		if !c.takeToken() {
			id := ""
			if kind == websocket.TextMessage {
				if f, _ := protocol.DecodeFrame(p); protocol.ValidID(f.ID) {
					id = f.ID
				}
			}
			c.Send(protocol.AppendError(nil, id, protocol.CodeRateLimited, "more than the allowed frames per second; slow down"))
			continue
		}
		if kind != websocket.TextMessage {
			c.Send(protocol.AppendError(nil, "", protocol.CodeBadRequest, "binary frames are not accepted; send JSON text frames"))
			continue
		}
		f, ferr := protocol.DecodeFrame(p)
		if ferr != nil {
			c.Send(protocol.AppendError(nil, ferr.ID, ferr.Code, ferr.Message))
			continue
		}
		if f.Type == protocol.TypePing {
			scratch = protocol.AppendPong(scratch[:0], f.ID)
			c.Send(append([]byte(nil), scratch...))
			continue
		}
		c.mu.Lock()
		draining := c.draining
		if !draining {
			c.inflight++
		}
		c.mu.Unlock()
		if draining {
			c.Send(protocol.AppendError(nil, f.ID, protocol.CodeUnavailable, "this node is shutting down; reconnect"))
			continue
		}
		h.HandleFrame(c, &f)
	}
}

func readErrorReason(err error) CloseReason {
	if errors.Is(err, websocket.ErrReadLimit) {
		return CloseTooBig // the library has already sent 1009
	}
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return CloseByClient
	}
	if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
		return CloseIdle
	}
	return CloseClientGone
}

// takeToken applies the rate limit; a refused frame takes no token.
func (c *Conn) takeToken() bool {
	now := time.Now()
	rate := float64(c.cfg.Rate)
	c.tokens += now.Sub(c.refill).Seconds() * rate
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
