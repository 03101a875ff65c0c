package router

import (
	"errors"
	"sort"
	"sync"
)

// Room membership belongs to a connection and ends with it (a group's
// belongs to its users and lives in the store). The router keeps it here,
// beside the replays of room history that hand over to live delivery.

// ErrTooManyRooms is a join past Config.MaxRooms.
var ErrTooManyRooms = errors.New("this connection has joined the most rooms allowed; leave one first")

// client is the router's state of one connection this node holds.
type client struct {
	Conn

	mu       sync.Mutex
	rooms    map[string]struct{}
	replays  map[string][]heldFrame // rooms being replayed: live messages held meanwhile
	replayed map[string]int64       // rooms replayed: the last offset the replay wrote
	watches  map[string]bool        // users watched (presence.go): true once the watch was answered
	state    map[stateKey]any       // what a capability keeps per connection (stateLocked)
}

// stateKey names the state a capability keeps per connection, in its own
// file, without a field here (typing.go's limiter, say).
type stateKey int

var stateKeys stateKey

// newStateKey is a capability's key; it runs at init.
func newStateKey() stateKey {
	stateKeys++
	return stateKeys
}

// stateLocked returns the connection's state under k, made by newState on first
// use; the caller holds c.mu. It ends with the connection.
func (c *client) stateLocked(k stateKey, newState func() any) any {
	v, ok := c.state[k]
	if !ok {
		if c.state == nil {
			c.state = map[stateKey]any{}
		}
		v = newState()
		c.state[k] = v
	}
	return v
}

// heldFrame is a live room message that arrived while the room's history
// was being replayed to the connection.
type heldFrame struct {
	seq   int64
	frame []byte
}

// join records room and reports whether it was new; at most max rooms.
func (c *client) join(room string, max int) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.rooms[room]; ok {
		return false, nil
	}
	if len(c.rooms) >= max {
		return false, ErrTooManyRooms
	}
	if c.rooms == nil {
		c.rooms = make(map[string]struct{})
	}
	c.rooms[room] = struct{}{}
	return true, nil
}

// leave forgets room and reports whether the connection had joined it.
func (c *client) leave(room string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.rooms[room]
	delete(c.rooms, room)
	delete(c.replayed, room)
	return ok
}

func (c *client) joined(room string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.rooms[room]
	return ok
}

// leaveAll forgets every room and returns them.
func (c *client) leaveAll() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	rooms := make([]string, 0, len(c.rooms))
	for r := range c.rooms {
		rooms = append(rooms, r)
	}
	c.rooms, c.replayed = nil, nil
	return rooms
}

// beginReplay makes live messages of room wait until endReplay, so that a
// replay of the room's history hands over to live delivery with no gap and
// no duplicate.
func (c *client) beginReplay(room string) {
	c.mu.Lock()
	if c.replays == nil {
		c.replays = make(map[string][]heldFrame)
	}
	c.replays[room] = []heldFrame{}
	c.mu.Unlock()
}

// sendRoom hands the connection a live message of room whose offset in the
// room's stream is seq (0 without a store, or for what is never stored:
// typing); during a replay of room a stored one waits instead. It is always
// queued, never written by the caller.
func (c *client) sendRoom(room string, seq int64, frame []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if seq > 0 && seq <= c.replayed[room] {
		// Stored before the replay read it, routed after the replay ended:
		// the replay has written it already.
		return true
	}
	held, replaying := c.replays[room]
	if !replaying || seq == 0 {
		// Not in the stream the replay hands over (a replay needs a
		// store): endReplay, which keeps what is above the replay's last
		// offset, would drop it.
		return c.Queue(frame)
	}
	if len(held) >= c.QueueLimit() {
		c.Cut()
		return false
	}
	c.replays[room] = append(held, heldFrame{seq, frame})
	return true
}

// endReplay ends the replay of room, which wrote offsets up to through: the
// live messages held meanwhile are queued in offset order, those the replay
// already wrote left out.
func (c *client) endReplay(room string, through int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	held := c.replays[room]
	delete(c.replays, room)
	if c.replayed == nil {
		c.replayed = make(map[string]int64)
	}
	c.replayed[room] = through
	sort.Slice(held, func(i, j int) bool { return held[i].seq < held[j].seq })
	frames := make([][]byte, 0, len(held))
	for _, h := range held {
		if h.seq > through {
			frames = append(frames, h.frame)
		}
	}
	if len(frames) > 0 {
		c.Queue(frames...)
	}
}
