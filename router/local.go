package router

import (
	"sync"
	"time"

	"github.com/shardchat/shard/ring"
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
	return r.registerLocked(r.ring.Load(), key, len(list))
}

// registerLocked sends this node's count for key to key's owner on rg. The
// caller holds the index lock.
func (r *Router) registerLocked(rg *ring.Ring, key Key, count int) <-chan error {
	done := make(chan error, 1)
	owner := rg.Owner(key.Name)
	// Our own cached view of key is stale from now on.
	r.cache.invalidate(key)
	switch owner {
	case "":
		done <- ErrNoRing
	case r.cfg.Self:
		r.applyRegistrations(r.cfg.Self, []registration{{key, count}}, func() { done <- nil })
	default:
		payload := appendRegistrations(nil, []registration{{key, count}})
		r.links.Request(owner, kindRegister, 1, payload, func(_ []byte, err error) { done <- err })
	}
	return done
}

// deliverDirect queues frame to every local connection of to, and of
// copyTo (the sender's other devices) when set, except skip. It returns how
// many connections of to got it.
func (r *Router) deliverDirect(to, copyTo string, skip *session.Conn, frame []byte) int {
	r.local.mu.RLock()
	got := r.sendAll(r.local.conns[Key{Name: to}], skip, frame)
	if copyTo != "" && copyTo != to {
		r.sendAll(r.local.conns[Key{Name: copyTo}], skip, frame)
	}
	r.local.mu.RUnlock()
	return got
}

// deliverRoom queues frame to every local connection that joined room,
// except skip, and returns how many got it.
func (r *Router) deliverRoom(room string, skip *session.Conn, frame []byte) int {
	r.local.mu.RLock()
	got := r.sendAll(r.local.conns[Key{Room: true, Name: room}], skip, frame)
	r.local.mu.RUnlock()
	return got
}

func (r *Router) sendAll(conns []*session.Conn, skip *session.Conn, frame []byte) int {
	got := 0
	for _, c := range conns {
		if c != skip && c.Send(frame) {
			got++
		}
	}
	if got > 0 {
		r.m.Deliveries.Add(float64(got))
	}
	return got
}

// registerBatch bounds the keys in one register frame.
const registerBatch = 1000

// SetMembers installs the ring for a new set of live members. The caches go
// (owners may have moved), the directory keeps only what this node still
// owns from nodes still present, and every key whose owner changed is
// registered with its new owner. It returns once those owners answered.
func (r *Router) SetMembers(members []Member) error {
	names := make([]string, len(members))
	addrs := make(map[string]string, len(members))
	for i, m := range members {
		names[i] = m.Name
		if m.Name != r.cfg.Self {
			addrs[m.Name] = m.Link
		}
	}
	rg, err := ring.New(names)
	if err != nil {
		return err
	}
	r.links.SetPeers(addrs)
	old := r.ring.Load()
	if old.Version() == rg.Version() {
		return nil
	}
	r.m.RingChanges.Inc()
	self := r.cfg.Self

	// Swap the ring and collect the moved keys under the index lock, so
	// that no registration slips between the two with the old owner.
	r.local.mu.Lock()
	r.ring.Store(rg)
	r.cache.reset()
	r.dir.Retain(rg.Has, func(k Key) bool { return rg.Owner(k.Name) == self })
	batches := make(map[string][]registration)
	for key, conns := range r.local.conns {
		owner := rg.Owner(key.Name)
		if owner == old.Owner(key.Name) && old.Has(owner) {
			continue
		}
		batches[owner] = append(batches[owner], registration{key, len(conns)})
	}
	var waits []<-chan error
	moved := 0
	for owner, regs := range batches {
		moved += len(regs)
		for len(regs) > 0 {
			n := min(len(regs), registerBatch)
			waits = append(waits, r.registerBatchLocked(owner, regs[:n]))
			regs = regs[n:]
		}
	}
	r.local.mu.Unlock()

	r.m.Reregistration.Add(float64(moved))
	r.log.Info("ring changed", "members", rg.Len(), "version", rg.Version(), "reregistered", moved)
	var firstErr error
	for _, w := range waits {
		if err := <-w; err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

func (r *Router) registerBatchLocked(owner string, regs []registration) <-chan error {
	done := make(chan error, 1)
	if owner == r.cfg.Self {
		r.applyRegistrations(owner, regs, func() { done <- nil })
		return done
	}
	r.links.Request(owner, kindRegister, len(regs), appendRegistrations(nil, regs), func(_ []byte, err error) { done <- err })
	return done
}

// sweepCaches is run by the router's background loop.
func (r *Router) sweepCaches(now time.Time) {
	self, rg := r.cfg.Self, r.ring.Load()
	r.dir.Sweep(now, func(k Key) bool { return rg.Owner(k.Name) == self })
	r.cache.sweep(now)
}
