package router

import (
	"sync"

	"github.com/shardchat/shard/session"
)

// localIndex is the connections this node holds, by user and by joined
// room. It is the source of truth that owners' directories are rebuilt from.
type localIndex struct {
	mu    sync.RWMutex
	conns map[Key][]*session.Conn
}

func newLocalIndex() localIndex {
	return localIndex{conns: make(map[Key][]*session.Conn)}
}

// updateLocal adds or removes c under key and registers the new count with
// key's owner; it returns once the owner has recorded it.
func (r *Router) updateLocal(key Key, c *session.Conn, add bool) error {
	return <-r.updateLocalAsync(key, c, add)
}

// updateLocalAsync is updateLocal without the wait. The count is read and
// sent under the index lock, so that two changes of one key reach the owner
// in the order they happened.
func (r *Router) updateLocalAsync(key Key, c *session.Conn, add bool) <-chan error {
	r.local.mu.Lock()
	defer r.local.mu.Unlock()
	list := r.local.conns[key]
	if add {
		list = append(list, c)
	} else {
		for i, x := range list {
			if x == c {
				// Copy rather than shift in place: a delivery may be
				// reading the old slice under the read lock.
				list = append(list[:i:i], list[i+1:]...)
				break
			}
		}
	}
	if len(list) == 0 {
		delete(r.local.conns, key)
	} else {
		r.local.conns[key] = list
	}
	// Our own cached view of key is stale from now on.
	r.cache.invalidate(key)
	owner := r.view.Load().ring.Owner(key.Name)
	if owner == "" {
		done := make(chan error, 1)
		done <- ErrNoRing
		return done
	}
	return r.registerLocked(owner, []registration{{key, len(list)}})
}

// registerLocked sends this node's counts to owner, itself included; the
// caller holds the index lock (a read lock will do where nothing changes). Registrations still in flight are counted, so
// that a drain can wait for its last unregistrations to land (not their
// retries: the owners of a node that leaves drop its entries anyway). Keys
// whose registration fails go to the retries.
func (r *Router) registerLocked(owner string, regs []registration) <-chan error {
	done := make(chan error, 1)
	r.registrationStarted()
	finish := func(err error) {
		if err != nil {
			r.retryLater(regs)
		}
		done <- err
		r.registrationDone()
	}
	if owner == r.cfg.Self {
		r.applyRegistrations(r.self(), regs, func() { finish(nil) })
		return done
	}
	r.request(owner, kindRegister, len(regs), appendRegistrations(nil, regs), func(_ []byte, err error) { finish(err) })
	return done
}

// deliverDirect queues frame to every local connection of to, and copy to
// those of copyTo (the sender's other devices) when set, except skip. It
// returns how many connections of to got it, and how many refused it
// because they are closing: their user is about to reconnect, not offline.
func (r *Router) deliverDirect(to, copyTo string, skip *session.Conn, frame, copy []byte) (got, refused int) {
	r.local.mu.RLock()
	got, refused = r.sendAll(r.local.conns[Key{Name: to}], skip, frame)
	if copyTo != "" && copyTo != to {
		r.sendAll(r.local.conns[Key{Name: copyTo}], skip, copy)
	}
	r.local.mu.RUnlock()
	return got, refused
}

// deliverRoom queues frame (offset seq in the room's stream) to every local
// connection that joined room, except skip, and returns how many got it.
func (r *Router) deliverRoom(room string, seq int64, skip *session.Conn, frame []byte) int {
	r.local.mu.RLock()
	got := 0
	for _, c := range r.local.conns[Key{Room: true, Name: room}] {
		if c != skip && c.SendRoom(room, seq, frame) {
			got++
		}
	}
	r.local.mu.RUnlock()
	if got > 0 {
		r.m.Deliveries.Add(float64(got))
	}
	return got
}

func (r *Router) sendAll(conns []*session.Conn, skip *session.Conn, frame []byte) (got, refused int) {
	for _, c := range conns {
		if c == skip {
			continue
		}
		if c.Send(frame) {
			got++
		} else {
			refused++
		}
	}
	if got > 0 {
		r.m.Deliveries.Add(float64(got))
	}
	return got, refused
}
