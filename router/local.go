package router

import (
	"sync"

	"github.com/shardchat/shard/link"
)

// localIndex is the connections this node holds, by user and by joined
// room. It is the source of truth that owners' directories are rebuilt from.
type localIndex struct {
	mu      sync.RWMutex
	conns   map[Key][]*client
	clients map[Conn]*client // every attached connection
}

func newLocalIndex() localIndex {
	return localIndex{conns: make(map[Key][]*client), clients: make(map[Conn]*client)}
}

// client returns the router's state of c, nil when c is not attached.
func (l *localIndex) client(c Conn) *client {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.clients[c]
}

// updateLocal adds or removes c under key and registers the new count with
// key's owner; it returns once the owner has recorded it.
func (r *Router) updateLocal(key Key, c *client, add bool) error {
	return <-r.updateLocalAsync(key, c, add)
}

// updateLocalAsync is updateLocal without the wait. The count is read and
// sent under the index lock, so that two changes of one key reach the owner
// in the order they happened.
func (r *Router) updateLocalAsync(key Key, c *client, add bool) <-chan error {
	r.local.mu.Lock()
	defer r.local.mu.Unlock()
	count := r.editLocked(key, c, add)
	owner := r.view.Load().ring.Owner(key.Name)
	if owner == "" {
		done := make(chan error, 1)
		done <- ErrNoRing
		return done
	}
	return r.registerLocked(owner, []registration{{key, count}})
}

// updateLocalMany is updateLocalAsync for many keys of one connection: one
// register frame per owner (of at most registerBatch keys), not one per key,
// so that a watch of a thousand users costs a message per owner. The
// channel gets the first error once every owner has answered.
func (r *Router) updateLocalMany(keys []Key, c *client, add bool) <-chan error {
	done := make(chan error, 1)
	r.local.mu.Lock()
	rg := r.view.Load().ring
	byOwner := make(map[string][]registration)
	for _, key := range keys {
		owner := rg.Owner(key.Name)
		byOwner[owner] = append(byOwner[owner], registration{key, r.editLocked(key, c, add)})
	}
	if _, none := byOwner[""]; none {
		r.local.mu.Unlock()
		done <- ErrNoRing
		return done
	}
	var waits []<-chan error
	for owner, regs := range byOwner {
		waits = append(waits, r.registerBatches(owner, regs)...)
	}
	r.local.mu.Unlock()
	go func() { done <- firstError(waits) }()
	return done
}

// editLocked adds or removes c under key and returns how many connections
// this node now holds for it; the caller holds the index lock.
func (r *Router) editLocked(key Key, c *client, add bool) int {
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
	return len(list)
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

// deliverLocal hands d to the connections this node holds of its target,
// and its copy to the sender's other connections, but d.skip. It returns how
// many connections of the target got it, and how many refused it because
// they are closing: their user is about to reconnect, not offline.
func (r *Router) deliverLocal(d *delivery) (got, refused int) {
	r.local.mu.RLock()
	defer r.local.mu.RUnlock()
	written := 0
	switch {
	case d.users != nil:
		for _, u := range d.users {
			g, _ := r.sendAll(r.local.conns[Key{Name: u}], d.skip, d.frame)
			got += g
		}
		written = got
	case d.target.Room:
		for _, c := range r.local.conns[d.target] {
			if c != d.skip && c.sendRoom(d.target.Name, d.seq, d.frame) {
				got++
			}
		}
		written = got
	default:
		got, refused = r.sendAll(r.local.conns[d.target], d.skip, d.frame)
		written = got
		if d.from != "" && d.from != d.target.Name {
			copy := d.copy
			if copy == nil {
				copy = d.frame
			}
			copies, _ := r.sendAll(r.local.conns[Key{Name: d.from}], d.skip, copy)
			written += copies
		}
	}
	if !d.ephemeral && written > 0 {
		r.m.Deliveries.Add(float64(written))
	}
	return got, refused
}

func (r *Router) sendAll(conns []*client, skip *client, frame []byte) (got, refused int) {
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
	return got, refused
}

func init() { servePeer(kindRegister, "register", (*Router).serveRegister) }

// serveRegister records a holder's counts, and answers once every node
// that cached an answer for one of those keys has dropped it.
func (r *Router) serveRegister(from link.Peer, p []byte, reply func([]byte)) {
	regs, err := decodeRegistrations(p)
	if err != nil {
		r.log.Warn("bad register from peer", "peer", from.Name, "err", err)
		reply(nil)
		return
	}
	r.applyRegistrations(from, regs, func() { reply(nil) })
}
