package session

import (
	"context"
	"errors"
	"io"
	"time"
)

// The write side of a connection. A frame for a connection with nothing
// queued is written at once by the goroutine that sends it, with one
// non-blocking write. Otherwise frames wait in a slice that grows only while
// frames wait, and a writer goroutine runs only while there is something to
// write: a channel of --send-queue slots and a goroutine per connection
// would cost an idle connection 24 KiB and 8 KiB, more than all the rest of
// it.

// spareLimit bounds the drained queue a connection keeps for reuse: a burst
// may grow the queue to --send-queue, but an idle connection keeps little.
const spareLimit = 64

// Send writes or queues one frame without blocking. When the queue is full
// the connection is closed as a slow consumer and Send returns false: one
// slow reader never holds up anyone else.
func (c *Conn) Send(frame []byte) bool {
	c.mu.Lock()
	if c.serving && !c.writing && !c.closed && !c.sealed && len(c.queue) == 0 {
		c.writing = true // own the socket's data writes, as a writer would
		c.mu.Unlock()
		return c.writeNow(frame)
	}
	return c.queueUnlock(frame)
}

// Queue queues frames, in order, for the connection's writer goroutine,
// which writes what is queued with one system call. The caller never writes
// to the socket itself: a page of history is in hand at once, and Send would
// write it a frame, and a system call, at a time; a room's fan-out writing
// each member's frame itself would hold up the link it came on for a write
// per member. Like Send it never blocks, and returns false when the
// connection refused a frame.
func (c *Conn) Queue(frames ...[]byte) bool {
	c.mu.Lock()
	return c.queueUnlock(frames...)
}

// queueUnlock queues frames, starts a writer when none runs, and unlocks
// c.mu.
func (c *Conn) queueUnlock(frames ...[]byte) bool {
	ok, full := true, false
	for _, f := range frames {
		if ok, full = c.queueLocked(f); !ok {
			break
		}
	}
	start := c.startWriterLocked()
	c.mu.Unlock()
	c.afterQueue(start, full)
	return ok
}

// writeNow writes frame from the caller's goroutine, without waiting for
// the socket: most deliveries find their connection idle, and a writer
// goroutine per frame costs more than the write. What the socket cannot
// take at once, and whatever was queued or closed meanwhile, is left to a
// writer. Frames sent meanwhile were queued: one the socket refused goes
// before them.
func (c *Conn) writeNow(frame []byte) bool {
	taken, tail, err := c.raw.WriteTextNow(frame)
	c.mu.Lock()
	ok, full := true, false
	if !taken {
		ok, full = c.queueFirstLocked(frame)
	}
	c.tail = tail
	c.writing = false
	start := c.startWriterLocked()
	c.mu.Unlock()
	if err != nil {
		c.Close(CloseClientGone)
	}
	c.afterQueue(start, full)
	return ok
}

// queueFirstLocked puts frame at the head of the queue, unless sealed or
// full.
func (c *Conn) queueFirstLocked(frame []byte) (ok, full bool) {
	if ok, full = c.queueLocked(frame); ok {
		copy(c.queue[1:], c.queue)
		c.queue[0] = frame
	}
	return ok, full
}

// queueLocked adds frame to the queue, unless sealed or full.
func (c *Conn) queueLocked(frame []byte) (ok, full bool) {
	if c.sealed {
		return false, false
	}
	if len(c.queue) >= c.cfg.SendQueue {
		return false, true
	}
	if c.queue == nil {
		c.queue, c.spare = c.spare, nil
	}
	c.queue = append(c.queue, frame)
	return true, false
}

func (c *Conn) afterQueue(start, full bool) {
	if full {
		c.Close(CloseSlowConsumer)
	}
	if start {
		go c.write()
	}
}

// WaitQueue waits until at most n frames are queued: a replay writes page
// after page without ever tripping the slow-consumer limit.
func (c *Conn) WaitQueue(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		queued, closed := len(c.queue), c.closed
		if c.space == nil {
			c.space = make(chan struct{}, 1)
		}
		space := c.space
		c.mu.Unlock()
		switch {
		case closed:
			return errors.New("connection closed")
		case queued <= n:
			return nil
		}
		select {
		case <-space:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// startWriterLocked reports whether the caller must start a writer: there
// is work (frames, the tail of one, or a close to carry out) and none is
// running.
func (c *Conn) startWriterLocked() bool {
	if !c.serving || c.writing || (len(c.queue) == 0 && !c.tail && !c.closed) {
		return false
	}
	c.writing = true
	return true
}

// write is the writer goroutine: it writes what is queued, in bursts, and
// exits when the queue is empty, or carries out the close once closed.
func (c *Conn) write() {
	for {
		c.mu.Lock()
		batch := c.queue
		c.queue = nil
		tail := c.tail
		c.tail = false
		if len(batch) == 0 && !tail {
			if c.closed {
				c.mu.Unlock()
				c.finish()
				return // writing stays set: no writer after the close
			}
			c.writing = false
			c.mu.Unlock()
			return
		}
		space := c.space
		c.mu.Unlock()
		if space != nil {
			select { // the queue is empty now: tell a waiting replay
			case space <- struct{}{}:
			default:
			}
		}
		err := c.writeBurst(batch)
		clear(batch) // let the frames go
		c.mu.Lock()
		if cap(batch) <= spareLimit {
			c.spare = batch[:0]
		}
		c.mu.Unlock()
		if err != nil {
			c.Close(CloseClientGone)
		}
	}
}

// writeBurst writes frames with one deadline and, when the listener allows,
// one system call.
func (c *Conn) writeBurst(frames [][]byte) error {
	deadline := time.Now().Add(c.cfg.WriteTimeout)
	c.raw.Hold(deadline)
	var err error
	for _, f := range frames {
		if err = c.raw.WriteFrame(opText, f, deadline); err != nil {
			break
		}
	}
	if rerr := c.raw.Release(); err == nil {
		err = rerr
	}
	return err
}

// ping runs on the ping timer. It closes a connection from which no frame
// has come for two ping intervals (nothing waits in a read with a
// deadline: see reader.go), and pings when a ping is due. Control frames
// may be written concurrently with the writer's data frames.
func (c *Conn) ping() {
	now := time.Now()
	silentUntil := time.Unix(0, c.lastFrame.Load()).Add(2 * c.cfg.PingInterval)
	if !now.Before(silentUntil) {
		c.Close(CloseIdle)
		return
	}
	c.mu.Lock()
	if c.closed || c.finished {
		c.mu.Unlock()
		return
	}
	lastPing := time.Unix(0, c.lastPing)
	due := !now.Before(lastPing.Add(c.cfg.PingInterval))
	if due {
		c.pings.Add(1)
	}
	c.mu.Unlock()
	if due {
		c.lastPing, lastPing = now.UnixNano(), now
		err := c.raw.WriteFrame(opPing, nil, now.Add(c.cfg.WriteTimeout))
		c.pings.Done()
		if err != nil {
			c.Close(CloseClientGone)
			return
		}
	}
	next := lastPing.Add(c.cfg.PingInterval)
	if silentUntil.Before(next) {
		next = silentUntil
	}
	c.pingTimer.Reset(time.Until(next))
}

// finish writes what a graceful close owes the client (the frames queued
// before it, then the close frame) and closes the socket, which ends the
// reader. It runs once, in the last writer.
func (c *Conn) finish() {
	reason := c.Reason()
	if reason.graceful() {
		for {
			c.mu.Lock()
			batch := c.queue
			c.queue = nil
			if len(batch) == 0 {
				// Sealed only now: a frame sent while the client still
				// listens is written before the close, not refused.
				c.sealed = true
				c.mu.Unlock()
				break
			}
			c.mu.Unlock()
			if c.writeBurst(batch) != nil {
				c.mu.Lock()
				c.sealed, c.queue = true, nil
				c.mu.Unlock()
				break
			}
		}
	}
	if reason.Code != 0 && reason != CloseTooBig {
		_ = c.raw.WriteFrame(opClose, closePayload(reason.Code, reason.Text), time.Now().Add(closeGrace))
	}
	// Closing a socket with unread input resets it, and a reset can destroy
	// the close frame before the client reads it. So let the client answer
	// first: wait for its close (the reader ends), or, when the reader has
	// already stopped at an oversized frame, read and discard the rest.
	switch {
	case reason == CloseTooBig:
		nc := c.nc
		_ = nc.SetReadDeadline(time.Now().Add(closeGrace))
		_, _ = io.Copy(io.Discard, io.LimitReader(nc, int64(4*c.cfg.MaxFrame)))
	case reason.Code != 0:
		if stop := c.readerStopped(); stop != nil {
			select {
			case <-stop:
			case <-time.After(closeGrace):
			}
		}
	}
	c.closeSocket()
	c.partDone()
}

// readerStopped is closed when the reader stops; nil when it has already.
func (c *Conn) readerStopped() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readEnded {
		return nil
	}
	if c.readerStop == nil {
		c.readerStop = make(chan struct{})
	}
	return c.readerStop
}

// closeSocket closes the TCP connection, and ends the reader: the one
// reading sees the socket shut, or, when none is, this goroutine ends it.
// The client sees the close at once, even while a frame's handler still
// runs in the reader (shutSocket): the descriptor itself closes once the
// reader lets go of it.
func (c *Conn) closeSocket() {
	c.mu.Lock()
	c.socketClosed.Store(true)
	endReader := !c.reading && !c.readEnded
	c.readEnded = c.readEnded || endReader
	c.mu.Unlock()
	c.unwatch() // before the descriptor can be another socket's, and before the shutdown wakes the poller
	c.shutSocket()
	_ = c.nc.Close()
	if endReader {
		c.endReader(CloseClientGone)
	}
}

// QueueLimit is the --send-queue bound of this connection: a replay writes
// pages well under it.
func (c *Conn) QueueLimit() int { return c.cfg.SendQueue }
