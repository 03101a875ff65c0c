package router

import "context"

// Conn is what the router needs of one client connection: who it is, and a
// way to hand it frames that never blocks the caller. session.Conn is the
// one a node serves; tests bring their own.
type Conn interface {
	// ID is the connection's number, unique on this node; User is the user
	// it was opened for.
	ID() uint64
	User() string
	// Send hands the connection one frame, written at once when nothing
	// waits before it. false: it is closing, or its queue is full (it is
	// then cut as a slow consumer).
	Send(frame []byte) bool
	// Queue hands it frames, in order, for its own writer: the caller never
	// writes to the socket, so that a fan-out to many connections waits for
	// none of them. false as for Send.
	Queue(frames ...[]byte) bool
	// Answer hands it the one answer owed to a frame given to HandleFrame;
	// nil when the frame is owed none (a typing frame without id).
	Answer(frame []byte)
	// QueueLimit is how many frames may wait; WaitQueue waits until at
	// most n do, so that a replay of history never overflows the queue.
	QueueLimit() int
	WaitQueue(ctx context.Context, n int) error
	// Cut closes it as a slow consumer: what it was owed could not be held.
	Cut()
}
