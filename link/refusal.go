package link

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Why the listener refused a connection: the `reason` label of
// shard_link_refused_total.
const (
	RefusedBusy      = "busy"       // MaxHandshakes links were being authenticated already
	RefusedTimeout   = "timeout"    // the hello did not arrive within DialTimeout
	RefusedMalformed = "malformed"  // not a hello, a hello too long, or another link version
	RefusedNotMember = "not_member" // without a key: not a current member by name, incarnation and address
	RefusedBadKey    = "bad_key"    // with a key: no proof of it; or one end has a key and the other none
)

// RefusalReasons lists every reason, for the metrics.
var RefusalReasons = []string{RefusedBusy, RefusedTimeout, RefusedMalformed, RefusedNotMember, RefusedBadKey}

// readRefusal names a failed read of a hello frame.
func readRefusal(err error) string {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return RefusedTimeout
	}
	return RefusedMalformed
}

// Bounds of the refusal log.
const (
	// refusalInterval is how often one remote's refusals are logged at
	// most: a flood of thousands of connections a second costs a line per
	// remote per interval, with the count.
	refusalInterval = 10 * time.Second
	// refusalRemotes bounds the remotes followed at once; refusals from
	// more are summed under one line (remote "other").
	refusalRemotes = 1024
)

// refusals counts and logs the connections the listener refused. The first
// refusal of a remote (an IP address) is logged at once; later ones within
// refusalInterval are counted, and logged as one line with their count
// when the interval ends.
type refusals struct {
	log    *slog.Logger
	counts map[string]*atomic.Uint64 // by reason; fixed at creation

	mu       sync.Mutex
	byRemote map[string]*refusalStreak
}

type refusalStreak struct {
	since  time.Time // when the last line about this remote was written
	n      int       // refusals since, not logged yet
	reason string    // the latest's
	err    error
}

func newRefusals(log *slog.Logger) *refusals {
	r := &refusals{log: log, counts: make(map[string]*atomic.Uint64), byRemote: make(map[string]*refusalStreak)}
	for _, reason := range RefusalReasons {
		r.counts[reason] = new(atomic.Uint64)
	}
	return r
}

// refuse records one refused connection from remote.
func (r *refusals) refuse(remote net.Addr, name, reason string, err error, now time.Time) {
	r.counts[reason].Add(1)
	host := remote.String()
	if h, _, splitErr := net.SplitHostPort(host); splitErr == nil {
		host = h
	}
	r.mu.Lock()
	s := r.byRemote[host]
	if s == nil && len(r.byRemote) >= refusalRemotes {
		host = "other"
		s = r.byRemote[host]
	}
	if s != nil {
		s.n++
		s.reason, s.err = reason, err
		r.mu.Unlock()
		return
	}
	r.byRemote[host] = &refusalStreak{since: now}
	r.mu.Unlock()
	r.log.Warn("link refused", "remote", host, "name", name, "reason", reason, "err", err)
}

// flush writes a line for each remote whose interval ended with refusals
// not logged yet, and forgets the remotes that were quiet.
func (r *refusals) flush(now time.Time) {
	type line struct {
		host, reason string
		n            int
		err          error
	}
	var lines []line
	r.mu.Lock()
	for host, s := range r.byRemote {
		if now.Sub(s.since) < refusalInterval {
			continue
		}
		if s.n == 0 {
			delete(r.byRemote, host)
			continue
		}
		lines = append(lines, line{host, s.reason, s.n, s.err})
		s.since, s.n = now, 0
	}
	r.mu.Unlock()
	for _, l := range lines {
		r.log.Warn("link refused", "remote", l.host, "reason", l.reason, "err", l.err,
			"times", l.n, "within", refusalInterval.String())
	}
}

// count is how many connections were refused for reason.
func (r *refusals) count(reason string) uint64 {
	if c := r.counts[reason]; c != nil {
		return c.Load()
	}
	return 0
}
