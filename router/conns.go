package router

import (
	"time"

	"github.com/shardchat/shard/session"
)

// Attach registers a new connection with its user's owner and returns once
// the owner has recorded it, so that messages sent from any node reach it.
// On error the connection is not registered.
//
// When the owner cannot be reached (it just died, and gossip has not said
// so yet), Attach keeps trying for attachWait: the ring will soon name a new
// owner, and a user reconnecting from the dead node should get in then
// rather than be refused.
func (r *Router) Attach(c *session.Conn) error {
	key := Key{Name: c.User}
	err := r.updateLocal(key, c, true)
	deadline := time.Now().Add(attachWait)
	for backoff := 20 * time.Millisecond; err != nil && retryable(err) && time.Now().Add(backoff).Before(deadline); backoff = min(2*backoff, 500*time.Millisecond) {
		select {
		case <-time.After(backoff):
		case <-r.stop:
			_ = r.updateLocal(key, c, false)
			return err
		}
		err = <-r.registerCurrent(key)
	}
	if err != nil {
		_ = r.updateLocal(key, c, false)
		return err
	}
	r.m.Connections.Inc()
	return nil
}

// registerCurrent sends this node's current count for key to its current
// owner.
func (r *Router) registerCurrent(key Key) <-chan error {
	r.local.mu.Lock()
	defer r.local.mu.Unlock()
	owner := r.view.Load().ring.Owner(key.Name)
	if owner == "" {
		done := make(chan error, 1)
		done <- ErrNoRing
		return done
	}
	return r.registerLocked(owner, []registration{{key, len(r.local.conns[key])}})
}

// Closed unregisters a connection and its room memberships.
func (r *Router) Closed(c *session.Conn, reason session.CloseReason) {
	r.m.Connections.Dec()
	r.m.Closes.WithLabelValues(reason.Label).Inc()
	r.updateLocalAsync(Key{Name: c.User}, c, false)
	for _, room := range c.Rooms() {
		c.Leave(room)
		r.updateLocalAsync(Key{Room: true, Name: room}, c, false)
	}
}
