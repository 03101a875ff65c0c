package sim

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"

	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/router"
)

// Conn is a simulated client connection: a router.Conn that records the
// answers it gets, by frame id, and counts the messages written to it.
type Conn struct {
	id   uint64
	user string
	// reader serializes the frames handed to the router, as a session's
	// reader does.
	reader   sync.Mutex
	received atomic.Int64

	mu      sync.Mutex
	answers map[string][]string // frame id -> the statuses (or error codes) it got
	waiters map[string]chan string
}

var _ router.Conn = (*Conn)(nil)

var connIDs atomic.Uint64

func newConn(user string) *Conn {
	return &Conn{id: connIDs.Add(1), user: user, answers: make(map[string][]string), waiters: make(map[string]chan string)}
}

func (c *Conn) ID() uint64   { return c.id }
func (c *Conn) User() string { return c.user }

// Send and Queue count the frames as written: a simulated client reads at
// once.
func (c *Conn) Send(frame []byte) bool {
	c.received.Add(1)
	return true
}

func (c *Conn) Queue(frames ...[]byte) bool {
	c.received.Add(int64(len(frames)))
	return true
}

// Answer records the status of an ack, or the code of an error.
func (c *Conn) Answer(frame []byte) {
	if frame == nil {
		return
	}
	var a struct {
		Type, ID, Status, Code string
	}
	if err := json.Unmarshal(frame, &a); err != nil {
		a.Status = "undecodable"
	}
	status := a.Status
	if a.Type == protocol.TypeError {
		status = a.Code
	}
	c.mu.Lock()
	c.answers[a.ID] = append(c.answers[a.ID], status)
	w := c.waiters[a.ID]
	delete(c.waiters, a.ID)
	c.mu.Unlock()
	if w != nil {
		w <- status
	}
}

func (c *Conn) QueueLimit() int                            { return 1 << 20 }
func (c *Conn) WaitQueue(ctx context.Context, n int) error { return nil }
func (c *Conn) Cut()                                       {}

// handle hands f to r as the connection's reader would, and returns a
// channel that gets its first answer.
func (c *Conn) handle(r *router.Router, f *protocol.Frame) <-chan string {
	w := make(chan string, 1)
	c.mu.Lock()
	c.waiters[f.ID] = w
	c.mu.Unlock()
	c.reader.Lock()
	r.HandleFrame(c, f)
	c.reader.Unlock()
	return w
}

// answerCount returns how many answers frame id got.
func (c *Conn) answerCount(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.answers[id])
}
