package router

import (
	"math/rand/v2"
	"sync"
	"time"
)

// slowRounds is how many rounds of retries fail (about 30 s) before the
// retries say so in the log: by then a dead owner has left the ring and its
// keys moved, so what still fails goes to a peer that gossip finds alive but
// the link cannot reach. The rounds go on, every 1-2 s, until the keys get
// through or their owner leaves: the owner's directory is wrong until then.
const slowRounds = 20

// maxRetryKeys bounds the retries: a key that fails past it is dropped, and
// its owner may list a connection that is gone, or miss one, until the key
// changes again here.
const maxRetryKeys = 1 << 20

// retries holds the keys whose last registration did not reach their
// owner. One round at a time
// sends each key's count then to its owner then: an owner that missed a
// change would list a connection that is gone (a user shown online,
// forwards to a node that has nobody) or miss one that is there, until the
// key changes again. An owner whose re-registration after a ring change
// (or a resync) failed is owed "synced" until its keys got through.
type retries struct {
	mu      sync.Mutex
	keys    map[Key]struct{}
	owed    map[string]syncedReport // owner -> what to tell it once its keys got through
	running bool                    // a round is scheduled or under way
	rounds  int                     // rounds since every retry last got through
	dropped int                     // keys dropped as past maxRetryKeys, not yet logged
}

// retryLater adds the keys of regs to the retries and schedules a round unless
// one is pending. It may run with the index lock held.
func (r *Router) retryLater(regs []registration) {
	r.retry.mu.Lock()
	defer r.retry.mu.Unlock()
	if r.retry.keys == nil {
		r.retry.keys = make(map[Key]struct{})
	}
	for _, reg := range regs {
		if _, held := r.retry.keys[reg.key]; !held && len(r.retry.keys) >= maxRetryKeys {
			r.retry.dropped++
			continue
		}
		r.retry.keys[reg.key] = struct{}{}
	}
	r.startRetriesLocked()
}

// syncedReport is a synced report owed to an owner: the version, and the
// one this node moved from to it ("" for everything the owner owns).
type syncedReport struct{ version, from string }

// oweSynced makes the retries tell owner that this node is in sync for
// version, moved to from from, once a round got every key it owns through.
func (r *Router) oweSynced(owner, version, from string) {
	r.retry.mu.Lock()
	defer r.retry.mu.Unlock()
	if r.retry.owed == nil {
		r.retry.owed = make(map[string]syncedReport)
	}
	r.retry.owed[owner] = syncedReport{version, from}
	r.startRetriesLocked()
}

// retryOwners are the owners, on v, of the keys in the retries.
func (r *Router) retryOwners(v *view) map[string]bool {
	r.retry.mu.Lock()
	defer r.retry.mu.Unlock()
	owners := make(map[string]bool)
	for key := range r.retry.keys {
		if owner := v.ring.Owner(key.Name); owner != "" {
			owners[owner] = true
		}
	}
	return owners
}

func (r *Router) startRetriesLocked() {
	if !r.retry.running {
		r.retry.running = true
		r.scheduleRetryLocked()
	}
}

// scheduleRetryLocked arms the next round, later the more rounds failed,
// with jitter so that nodes cut off together do not retry in step; the
// caller holds r.retry.mu.
func (r *Router) scheduleRetryLocked() {
	delay := min(100*time.Millisecond<<min(r.retry.rounds, 5), 2*time.Second)
	delay = delay/2 + rand.N(delay/2)
	time.AfterFunc(delay, r.retryRound)
}

// retryRound sends the count of every key in the retries to its owner,
// tells the owners it owes "synced" whose keys all got through, and arms
// the next round while something is left.
func (r *Router) retryRound() {
	r.retry.mu.Lock()
	keys, owed := r.retry.keys, r.retry.owed
	r.retry.keys, r.retry.owed = nil, nil
	r.retry.mu.Unlock()
	select {
	case <-r.stop:
		return
	default:
	}
	// A read lock is enough to keep each key's count in order with its
	// changes (they take the write lock), and lets deliveries go on.
	r.local.mu.RLock()
	v := r.view.Load()
	byOwner := make(map[string][]registration)
	for key := range keys {
		if owner := v.ring.Owner(key.Name); owner != "" {
			byOwner[owner] = append(byOwner[owner], registration{key, len(r.local.conns[key])})
		}
	}
	waits := make(map[string][]<-chan error, len(byOwner))
	for owner, regs := range byOwner {
		waits[owner] = r.registerBatches(owner, regs)
	}
	r.local.mu.RUnlock()
	var failed error
	failedAt := make(map[string]bool)
	for owner, ws := range waits { // failures are back in the retries by now
		if err := firstError(ws); err != nil {
			failed, failedAt[owner] = err, true
		}
	}
	for owner, report := range owed {
		if report.version != v.version {
			delete(owed, owner) // a later change announced, or owes, its own
			continue
		}
		if !failedAt[owner] && v.ring.Has(owner) {
			r.tellSynced(owner, report.version, report.from)
			delete(owed, owner)
		}
	}

	r.retry.mu.Lock()
	defer r.retry.mu.Unlock()
	for owner, report := range owed {
		if _, newer := r.retry.owed[owner]; !newer && failedAt[owner] {
			if r.retry.owed == nil {
				r.retry.owed = make(map[string]syncedReport)
			}
			r.retry.owed[owner] = report
		}
	}
	if r.retry.dropped > 0 {
		r.log.Warn("registrations dropped: too many failing", "keys", r.retry.dropped, "max", maxRetryKeys)
		r.retry.dropped = 0
	}
	if len(r.retry.keys) == 0 && len(r.retry.owed) == 0 {
		if r.retry.rounds >= slowRounds {
			r.log.Info("registrations got through again")
		}
		r.retry.running, r.retry.rounds = false, 0
		return
	}
	if failed != nil {
		r.retry.rounds++
		if r.retry.rounds == slowRounds {
			r.log.Warn("registrations still failing; retrying", "keys", len(r.retry.keys), "owners", len(r.retry.owed), "err", failed)
		}
	}
	r.scheduleRetryLocked()
}
