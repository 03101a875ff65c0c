package router

import "time"

// Attach registers a new connection with its user's owner and returns once
// the owner has recorded it, so that messages sent from any node reach it.
// On error the connection is not registered.
//
// When the owner cannot be reached (it just died, and gossip has not said
// so yet), Attach keeps trying for attachWait: the ring will soon name a new
// owner, and a user reconnecting from the dead node should get in then
// rather than be refused.
func (r *Router) Attach(c Conn) error {
	cl := &client{Conn: c}
	r.local.mu.Lock()
	r.local.clients[c] = cl
	r.local.mu.Unlock()
	key := Key{Name: c.User()}
	err := r.updateLocal(key, cl, true)
	deadline := time.Now().Add(attachWait)
	for backoff := 20 * time.Millisecond; err != nil && retryable(err) && time.Now().Add(backoff).Before(deadline); backoff = min(2*backoff, 500*time.Millisecond) {
		select {
		case <-time.After(backoff):
		case <-r.stop:
			r.detach(cl)
			return err
		}
		err = <-r.registerCurrent(key)
	}
	if err != nil {
		r.detach(cl)
		return err
	}
	r.m.Connections.Inc()
	return nil
}

// detach forgets a connection whose registration failed.
func (r *Router) detach(cl *client) {
	_ = r.updateLocal(Key{Name: cl.User()}, cl, false)
	r.local.mu.Lock()
	delete(r.local.clients, cl.Conn)
	r.local.mu.Unlock()
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

// Closed unregisters a connection that Attach registered, and its room
// memberships; reason labels the close in the metrics.
func (r *Router) Closed(c Conn, reason string) {
	r.local.mu.Lock()
	cl := r.local.clients[c]
	delete(r.local.clients, c)
	r.local.mu.Unlock()
	if cl == nil {
		return
	}
	r.m.Connections.Dec()
	r.m.Closes.WithLabelValues(reason).Inc()
	r.updateLocalAsync(Key{Name: c.User()}, cl, false)
	r.unwatchAll(cl)
	for _, room := range cl.leaveAll() {
		r.updateLocalAsync(Key{Room: true, Name: room}, cl, false)
	}
}
