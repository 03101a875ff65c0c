package router

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/shardchat/shard/link"
)

// Errors behind an `unavailable` answer.
var (
	ErrNoRing    = errors.New("no members in the ring yet")
	ErrNotOwner  = errors.New("asked node does not own the key on its ring")
	ErrUnsettled = errors.New("owner is still rebuilding its directory")
)

// Locations answers where key's connections are, through its owner and
// without caching: for the HTTP API.
func (r *Router) Locations(ctx context.Context, key Key) ([]Location, error) {
	return r.retryUnsettled(func() ([]Location, error) { return r.locateOnce(ctx, key, false) })
}

// locate returns the nodes that hold key's connections: from this node's
// directory when it owns key, else from the cache or the owner. While the
// cluster cannot tell (the ring just changed), it retries for settleWait.
func (r *Router) locate(key Key) ([]Location, error) {
	return r.retryUnsettled(func() ([]Location, error) { return r.locateOnce(context.Background(), key, true) })
}

// locateOnce asks once: this node's directory, or the cache (when cached
// answers will do), or the owner.
func (r *Router) locateOnce(ctx context.Context, key Key, useCache bool) ([]Location, error) {
	v := r.view.Load()
	owner := v.ring.Owner(key.Name)
	switch owner {
	case "":
		return nil, ErrNoRing
	case r.cfg.Self:
		locs, _, err := r.lookupOwned(key, "", time.Time{}, v.version)
		return locs, err
	}
	if !useCache {
		locs, _, err := r.askOwner(ctx, owner, key, v.version, false)
		return locs, err
	}
	now := time.Now()
	locs, hit, f, leader := r.cache.get(key, now)
	if hit {
		r.m.lookupCache.with("hit").Inc()
		return locs, nil
	}
	if !leader {
		<-f.done // the leader always finishes: every request is answered or fails
		return f.locs, f.err
	}
	r.m.lookupCache.with("miss").Inc()
	locs, cacheable, err := r.askOwner(ctx, owner, key, v.version, true)
	r.cache.finish(key, f, locs, err, cacheable, now.Add(r.cfg.CacheTTL))
	return locs, err
}

// retryUnsettled retries lookup while its error says the answer is only
// not known yet, for at most settleWait.
func (r *Router) retryUnsettled(lookup func() ([]Location, error)) (locs []Location, err error) {
	r.whileUnsettled(func() bool {
		locs, err = lookup()
		return err != nil && retryable(err)
	})
	return locs, err
}

// whileUnsettled calls try again, 5 ms to 200 ms later, while it says some
// answer is not known yet (the ring just changed), for at most settleWait
// or until the router stops.
func (r *Router) whileUnsettled(try func() (again bool)) {
	deadline := time.Now().Add(settleWait)
	for backoff := 5 * time.Millisecond; try() && time.Now().Add(backoff).Before(deadline); backoff = min(2*backoff, 200*time.Millisecond) {
		select {
		case <-time.After(backoff):
		case <-r.stop:
			return
		}
	}
}

func retryable(err error) bool {
	return errors.Is(err, ErrUnsettled) || errors.Is(err, ErrNotOwner) || errors.Is(err, ErrNoRing) ||
		errors.Is(err, link.ErrPeerDown) || errors.Is(err, link.ErrPeerUnknown)
}

// lookupOwned answers a lookup of a key this node owns. A miss is an answer
// only once every member has re-registered for the asker's membership.
func (r *Router) lookupOwned(key Key, watcher string, until time.Time, version string) ([]Location, bool, error) {
	locs, watched := r.dir.Lookup(key, watcher, until)
	if len(locs) == 0 && !r.settle.settled(version, time.Now()) {
		return nil, false, ErrUnsettled
	}
	return locs, watched, nil
}

// askOwner sends a lookup to owner and waits for its answer; with watch,
// the owner will tell this node when the answer changes, if it says the
// answer is cacheable.
func (r *Router) askOwner(ctx context.Context, owner string, key Key, version string, watch bool) ([]Location, bool, error) {
	var flags byte
	if watch {
		flags = lookupWatch
	}
	payload := appendKey([]byte{flags}, key)
	payload = link.AppendString(payload, version)
	p, err := r.ask(ctx, owner, kindLookup, payload)
	if err != nil {
		return nil, false, err
	}
	status, locs, err := decodeLocations(p)
	if err != nil {
		return nil, false, fmt.Errorf("lookup %s at %s: %w", key, owner, err)
	}
	return lookupResult{status, locs}.locations()
}

func init() { servePeer(kindLookup, "lookup", (*Router).serveLookup) }

// serveLookup answers where a key this node owns has connections; with the
// watch flag it remembers the asker, to tell it when the answer changes.
func (r *Router) serveLookup(from link.Peer, p []byte, reply func([]byte)) {
	d := link.NewDecoder(p)
	flags := d.Byte()
	key := decodeKey(&d)
	version := d.String()
	if d.Done() != nil {
		r.log.Warn("bad lookup from peer", "peer", from.Name)
		reply(nil)
		return
	}
	status, locs := r.answerLookup(from, key, flags&lookupWatch != 0, version)
	reply(appendLocations(nil, status, locs))
}

// answerLookup is the owner's answer for one key.
func (r *Router) answerLookup(from link.Peer, key Key, watch bool, version string) (byte, []Location) {
	if r.view.Load().ring.Owner(key.Name) != r.cfg.Self {
		return lookupNotOwner, nil
	}
	watcher, until := "", time.Time{}
	if watch {
		watcher, until = from.Name, time.Now().Add(r.cfg.CacheTTL+watchSlack)
	}
	locs, watched, err := r.lookupOwned(key, watcher, until, version)
	switch {
	case err != nil:
		return lookupUnsettled, nil
	case watch && !watched:
		return lookupUnwatched, nil
	}
	return lookupKnown, locs
}

// A group's members are many users, each with its own owner: they are
// looked up together, with one request per owner for all the misses it
// owns, not one per user.

func init() { servePeer(kindLookupUsers, "lookup_users", (*Router).serveLookupUsers) }

// locateUsers returns where each of users has connections, by index: from
// this node's directory, the cache, or one lookup per owner for the rest.
// While the cluster cannot tell (the ring just changed) it retries those for
// settleWait; a user whose owner still cannot tell gets no location, and
// its index is in unknown.
func (r *Router) locateUsers(users []string) (locs [][]Location, unknown []int) {
	locs = make([][]Location, len(users))
	pending := make([]int, len(users))
	for i := range pending {
		pending[i] = i
	}
	r.whileUnsettled(func() bool {
		pending = r.locateUsersOnce(users, pending, locs)
		return len(pending) > 0
	})
	return locs, pending
}

// locateUsersOnce fills locs for the users at the indexes of pending and
// returns those it could not tell yet.
func (r *Router) locateUsersOnce(users []string, pending []int, locs [][]Location) (again []int) {
	v := r.view.Load()
	now := time.Now()
	type miss struct {
		i int
		f *flight
	}
	asks := make(map[string][]miss) // owner -> the keys this node leads the lookup of
	var follow []miss
	for _, i := range pending {
		key := Key{Name: users[i]}
		switch owner := v.ring.Owner(key.Name); owner {
		case "":
			again = append(again, i)
		case r.cfg.Self:
			l, _, err := r.lookupOwned(key, "", time.Time{}, v.version)
			if err != nil {
				again = append(again, i)
				continue
			}
			locs[i] = l
		default:
			l, hit, f, leader := r.cache.get(key, now)
			switch {
			case hit:
				r.m.lookupCache.with("hit").Inc()
				locs[i] = l
			case leader:
				r.m.lookupCache.with("miss").Inc()
				asks[owner] = append(asks[owner], miss{i, f})
			default:
				follow = append(follow, miss{i, f})
			}
		}
	}
	type answer struct {
		owner string
		p     []byte
		err   error
	}
	answers := make(chan answer, len(asks))
	for owner, ms := range asks {
		keys := make([]Key, len(ms))
		for j, m := range ms {
			keys[j] = Key{Name: users[m.i]}
		}
		payload := append([]byte{lookupWatch}, link.AppendString(nil, v.version)...)
		payload = appendKeys(payload, keys)
		r.request(owner, kindLookupUsers, len(keys), payload, func(p []byte, err error) { answers <- answer{owner, p, err} })
	}
	expires := now.Add(r.cfg.CacheTTL)
	for range asks {
		a := <-answers // every request is answered or fails
		ms := asks[a.owner]
		var results []lookupResult
		err := a.err
		if err == nil {
			if results, err = decodeLookupResults(a.p); err == nil && len(results) != len(ms) {
				err = errMalformed
			}
		}
		for j, m := range ms {
			key := Key{Name: users[m.i]}
			var l []Location
			cacheable, kerr := false, err
			if kerr == nil {
				l, cacheable, kerr = results[j].locations()
			}
			r.cache.finish(key, m.f, l, kerr, cacheable, expires)
			if kerr != nil {
				again = append(again, m.i)
				continue
			}
			locs[m.i] = l
		}
	}
	for _, m := range follow {
		<-m.f.done // the leader always finishes
		if m.f.err != nil {
			again = append(again, m.i)
			continue
		}
		locs[m.i] = m.f.locs
	}
	return again
}

// serveLookupUsers answers a lookup of many users at once, in order.
func (r *Router) serveLookupUsers(from link.Peer, p []byte, reply func([]byte)) {
	d := link.NewDecoder(p)
	flags := d.Byte()
	version := d.String()
	keys := decodeKeyList(&d)
	if err := d.Done(); err != nil {
		r.log.Warn("bad lookup of users from peer", "peer", from.Name, "err", err)
		reply(nil)
		return
	}
	b := binary.AppendUvarint(nil, uint64(len(keys)))
	for _, key := range keys {
		status, locs := r.answerLookup(from, key, flags&lookupWatch != 0, version)
		b = appendLocations(b, status, locs)
	}
	reply(b)
}
