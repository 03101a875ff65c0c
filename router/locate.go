package router

import (
	"context"
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
		return r.lookupOwned(key, "", time.Time{}, v.version)
	}
	if !useCache {
		return r.askOwner(ctx, owner, key, v.version, false)
	}
	now := time.Now()
	locs, hit, f, leader := r.cache.get(key, now)
	if hit {
		r.m.LookupCache.WithLabelValues("hit").Inc()
		return locs, nil
	}
	if !leader {
		<-f.done // the leader always finishes: every request is answered or fails
		return f.locs, f.err
	}
	r.m.LookupCache.WithLabelValues("miss").Inc()
	locs, err := r.askOwner(ctx, owner, key, v.version, true)
	r.cache.finish(key, f, locs, err, now.Add(r.cfg.CacheTTL))
	return locs, err
}

// retryUnsettled retries lookup while its error says the answer is only
// not known yet, for at most settleWait.
func (r *Router) retryUnsettled(lookup func() ([]Location, error)) ([]Location, error) {
	deadline := time.Now().Add(settleWait)
	backoff := 5 * time.Millisecond
	for {
		locs, err := lookup()
		if err == nil || !retryable(err) || time.Now().Add(backoff).After(deadline) {
			return locs, err
		}
		select {
		case <-time.After(backoff):
		case <-r.stop:
			return nil, err
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

func retryable(err error) bool {
	return errors.Is(err, ErrUnsettled) || errors.Is(err, ErrNotOwner) || errors.Is(err, ErrNoRing) ||
		errors.Is(err, link.ErrPeerDown) || errors.Is(err, link.ErrPeerUnknown)
}

// lookupOwned answers a lookup of a key this node owns. A miss is an answer
// only once every member has re-registered for the asker's membership.
func (r *Router) lookupOwned(key Key, watcher string, until time.Time, version string) ([]Location, error) {
	locs := r.dir.Lookup(key, watcher, until)
	if len(locs) == 0 && !r.settle.settled(version, time.Now()) {
		return nil, ErrUnsettled
	}
	return locs, nil
}

// askOwner sends a lookup to owner and waits for its answer; with watch,
// the owner will tell this node when the answer changes.
func (r *Router) askOwner(ctx context.Context, owner string, key Key, version string, watch bool) ([]Location, error) {
	var flags byte
	if watch {
		flags = lookupWatch
	}
	payload := appendKey([]byte{flags}, key)
	payload = link.AppendString(payload, version)
	type answer struct {
		p   []byte
		err error
	}
	ch := make(chan answer, 1)
	r.request(owner, kindLookup, 1, payload, func(p []byte, err error) { ch <- answer{p, err} })
	var a answer
	select {
	case a = <-ch:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if a.err != nil {
		return nil, a.err
	}
	status, locs, err := decodeLocations(a.p)
	if err != nil {
		return nil, fmt.Errorf("lookup %s at %s: %w", key, owner, err)
	}
	switch status {
	case lookupKnown:
		return locs, nil
	case lookupUnsettled:
		return nil, ErrUnsettled
	default:
		return nil, ErrNotOwner
	}
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
	if r.view.Load().ring.Owner(key.Name) != r.cfg.Self {
		reply(appendLocations(nil, lookupNotOwner, nil))
		return
	}
	watcher, until := "", time.Time{}
	if flags&lookupWatch != 0 {
		watcher, until = from.Name, time.Now().Add(r.cfg.CacheTTL+watchSlack)
	}
	locs, err := r.lookupOwned(key, watcher, until, version)
	if err != nil {
		reply(appendLocations(nil, lookupUnsettled, nil))
		return
	}
	reply(appendLocations(nil, lookupKnown, locs))
}
