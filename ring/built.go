package ring

import (
	"slices"
	"sync"
)

// Rings are immutable, so one built for a member set can be handed to every
// caller that asks for the same set. A membership change has every router of a
// process build the same ring: one in a node, 256 in a simulated cluster
// (internal/sim), and at 256 members a build costs about 7 ms (consistent's own
// build took 0.3 s). New keeps the last few, and callers that ask
// for a set while it is being built wait for that build instead of starting
// their own.

// keptRings bounds the rings kept: a simulation's churn needs the current
// and the previous set, a node one.
const keptRings = 4

type build struct {
	scheme  Scheme
	members []string // sorted
	done    chan struct{}
	ring    *Ring
	err     error
}

var built struct {
	mu     sync.Mutex
	builds []*build // newest last, at most keptRings
}

// buildOnce returns the ring of scheme s for sorted (valid, non-empty) members,
// built by construct once while it is among the last keptRings asked for.
func buildOnce(s Scheme, sorted []string, construct func() (*Ring, error)) (*Ring, error) {
	built.mu.Lock()
	for _, b := range built.builds {
		if b.scheme == s && slices.Equal(b.members, sorted) {
			built.mu.Unlock()
			<-b.done
			return b.ring, b.err
		}
	}
	b := &build{scheme: s, members: sorted, done: make(chan struct{})}
	if len(built.builds) == keptRings {
		built.builds = slices.Delete(built.builds, 0, 1)
	}
	built.builds = append(built.builds, b)
	built.mu.Unlock()
	b.ring, b.err = construct()
	close(b.done)
	return b.ring, b.err
}
