package router

import (
	"sync"
	"time"

	"github.com/shardchat/shard/link"
)

// How an owner learns that its directory is whole again after a membership
// change: each member that re-registered what moved tells the owners it
// gave keys to ("synced"), an owner asks again (resync) those that do not,
// and until all did a directory miss means "do not know yet", not "offline".

// settleTimeout bounds how long an owner waits for members to report that
// they re-registered: one that never reports is dead or cut off, and the
// next membership change will say so.
const settleTimeout = 5 * time.Second

// settleAsk: an owner still waiting for members' reports this long after a
// change asks them to register again (resync), which they report once done;
// and again after twice as long each time, until settleTimeout, so a member
// still busy registering, or not yet on the change, is asked 4 times at
// most by the chase, besides once at once for each report that does not
// count. A member tells only the owners its own previous view says were given
// partitions (or are new to it), and a member that skipped a view, or saw
// the members come in another order, may not know this owner was.
const settleAsk = 250 * time.Millisecond

// syncedHeard is the answer of a node that reads the version a synced
// report says its sender moved from. An older node refuses such a report
// and answers nothing; it is then told again without it.
const syncedHeard byte = 1

// appendSynced encodes a synced report: the version the sender's
// registrations are in place for, then the version it moved from to it,
// left out when the sender registered everything the owner owns (a
// resync, its first view, an owner new to it).
func appendSynced(b []byte, version, from string) []byte {
	b = link.AppendString(b, version)
	if from != "" {
		b = link.AppendString(b, from)
	}
	return b
}

func decodeSynced(p []byte) (version, from string, err error) {
	d := link.NewDecoder(p)
	version = d.String()
	if d.Err() == nil && d.More() {
		from = d.String()
	}
	return version, from, d.Done()
}

// settlement tracks, for the current membership version, which members have
// re-registered their connections. Until all have, a directory miss means
// "do not know yet", never "offline".
type settlement struct {
	mu      sync.Mutex
	version string
	// from is the version this node moved from to version. A member that
	// moved from another one (it skipped a view, or saw the changes in
	// another order) re-registered what moved between its own two views,
	// which can miss keys this node dropped: in a view the member never saw,
	// a key's partition left this node and came back. Such a member's
	// report does not count; it is asked to register again.
	from     string
	waiting  map[string]bool
	deadline time.Time
	early    map[string]map[string]string // reports for versions not yet seen here: version -> member -> its from
	// dropped are the holders whose entries of keys that moved away this
	// node dropped on coming to version. A holder ahead of it may have
	// registered such a key for a later view in which it comes back here:
	// its report for any other version, kept or to come, does not count.
	dropped map[string]bool
	done    chan struct{} // closed once waiting is empty
}

// notCovering stands for the from of a report that does not count: no
// version is empty, nor starts with a zero byte.
const notCovering = "\x00"

// reset starts settling version, reached from version from, waiting for
// members. It returns those that reported for version before it came here,
// from another change: they are to be asked to register again.
func (s *settlement) reset(version, from string, members []string, now time.Time) (resync []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.version, s.from, s.dropped = version, from, nil
	s.waiting = make(map[string]bool, len(members))
	for _, m := range members {
		reported, ok := s.early[version][m]
		if ok && !s.coversLocked(reported) {
			resync = append(resync, m)
		}
		if !ok || !s.coversLocked(reported) {
			s.waiting[m] = true
		}
	}
	delete(s.early, version)
	s.deadline = now.Add(settleTimeout)
	s.done = make(chan struct{})
	if len(s.waiting) == 0 {
		close(s.done)
	}
	return resync
}

// coversLocked says whether a member's registrations, made on moving from
// version from ("" when it registered everything), hold all this node
// dropped for the version being settled.
func (s *settlement) coversLocked(from string) bool {
	return from == "" || from == s.from // s.from is a version, never notCovering
}

// holdersDropped records the holders whose entries of keys that moved away
// the change to the version being settled dropped, and marks their reports
// for other versions as not counting.
func (s *settlement) holdersDropped(holders map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropped = holders
	for version, reports := range s.early {
		if version == s.version {
			continue
		}
		for node := range reports {
			if holders[node] {
				reports[node] = notCovering
			}
		}
	}
}

// wait returns the version being settled, a channel closed once every
// member has reported for it, and the deadline after which it counts as
// settled all the same.
func (s *settlement) wait() (version string, done <-chan struct{}, deadline time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version, s.done, s.deadline
}

// synced records that node finished re-registering for version, having
// moved to it from version from. It reports whether node must be asked to
// register again: this node waits for it, and from is not its own.
func (s *settlement) synced(version, node, from string) (resync bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if version == s.version {
		if !s.waiting[node] {
			return false
		}
		if !s.coversLocked(from) {
			return true
		}
		delete(s.waiting, node)
		if len(s.waiting) == 0 {
			close(s.done)
		}
		return false
	}
	// A member may be ahead of us; keep a few versions, not a history.
	if s.early == nil {
		s.early = make(map[string]map[string]string)
	}
	if len(s.early) >= 8 {
		clear(s.early)
	}
	if s.early[version] == nil {
		s.early[version] = make(map[string]string)
	}
	// A report of everything stays: a later one from a change says less.
	switch reported, ok := s.early[version][node]; {
	case s.dropped[node]:
		s.early[version][node] = notCovering
	case !ok || reported != "":
		s.early[version][node] = from
	}
	return false
}

// waitingFor lists the members version still waits for; current is false
// once another version is being settled.
func (s *settlement) waitingFor(version string) (members []string, current bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if version != s.version {
		return nil, false
	}
	for m := range s.waiting {
		members = append(members, m)
	}
	return members, true
}

func (s *settlement) settled(version string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return version == s.version && (len(s.waiting) == 0 || now.After(s.deadline))
}

// resync registers with owner, again, every key this node holds that owner
// owns on this node's view, then reports this node's version to it; what
// fails goes to the retries, which report it once it got through. Two runs
// at once for one owner send the same counts: it costs a frame, no harm.
func (r *Router) resync(owner string) {
	r.local.mu.RLock()
	v := r.view.Load()
	var regs []registration
	for key, conns := range r.local.conns {
		if v.ring.Owner(key.Name) == owner {
			regs = append(regs, registration{key, len(conns)})
		}
	}
	waits := r.registerBatches(owner, regs)
	r.local.mu.RUnlock()
	if firstError(waits) != nil {
		r.oweSynced(owner, v.version, "")
		return
	}
	r.tellSynced(owner, v.version, "")
}

// chaseSynced asks the members version still waits for to register
// again, settleAsk after the change, then twice as long after each ask,
// until it settles, its deadline passes or another version replaces it.
func (r *Router) chaseSynced(version string) {
	defer r.wg.Done()
	v, done, deadline := r.settle.wait()
	if v != version {
		return
	}
	for wait := settleAsk; ; wait *= 2 {
		t := time.NewTimer(wait)
		select {
		case <-done:
			t.Stop()
			return
		case <-r.stop:
			t.Stop()
			return
		case now := <-t.C:
			waiting, current := r.settle.waitingFor(version)
			if !current || now.After(deadline) {
				return
			}
			for _, m := range waiting {
				if m != r.cfg.Self {
					r.askToRegisterAgain(m, version)
				}
			}
		}
	}
}

// movedFrom is the version the registrations this node made for nv, on
// moving to it from old, start from, as told to owner m: "" when they hold
// everything m owns, because m is new since old (every key it owns changed
// owner, or its owner's incarnation) or nv is this node's first view (old
// is the empty one: every key changed owner).
func (r *Router) movedFrom(old, nv *view, m string) string {
	if nv.newSince(old, m) || nv.newSince(old, r.cfg.Self) {
		return ""
	}
	return old.version
}

// announceSynced tells each member of to but those in skip that this
// node's registrations for nv, on moving to it from old, are in place.
func (r *Router) announceSynced(old, nv *view, to []string, skip map[string]bool) {
	r.settle.synced(nv.version, r.cfg.Self, "")
	for _, m := range to {
		if m != r.cfg.Self && !skip[m] {
			r.tellSynced(m, nv.version, r.movedFrom(old, nv, m))
		}
	}
}

// tellSynced tells owner that this node's registrations for version are in
// place, made on moving to it from version from ("" for everything owner
// owns). An owner of an older build refuses the from and answers nothing;
// it is told again without it, which it takes as it always did.
func (r *Router) tellSynced(owner, version, from string) {
	r.request(owner, kindSynced, 1, appendSynced(nil, version, from), func(reply []byte, err error) {
		if err == nil && from != "" && len(reply) == 0 {
			r.request(owner, kindSynced, 1, appendSynced(nil, version, ""), func([]byte, error) {})
		}
	})
}

func init() {
	servePeer(kindSynced, "synced", (*Router).serveSynced)
	servePeer(kindResync, "resync", (*Router).serveResync)
}

// serveSynced records that a peer has re-registered for a ring version, and
// asks it to register again when it moved there from another version than
// this node did.
func (r *Router) serveSynced(from link.Peer, p []byte, reply func([]byte)) {
	version, movedFrom, err := decodeSynced(p)
	if err != nil {
		r.log.Warn("bad synced from peer", "peer", from.Name, "err", err)
		reply(nil)
		return
	}
	reply(AppendSyncedAnswer(nil))
	if r.settle.synced(version, from.Name, movedFrom) {
		r.askToRegisterAgain(from.Name, version)
	}
}

// askToRegisterAgain asks member for a resync of version; the chase asks
// again while it does not report.
func (r *Router) askToRegisterAgain(member, version string) {
	r.request(member, kindResync, 1, link.AppendString(nil, version), func([]byte, error) {})
}

// serveResync registers again, with the peer that asks, what this node
// holds that it owns.
func (r *Router) serveResync(from link.Peer, _ []byte, reply func([]byte)) {
	reply(nil)
	r.wg.Add(1)
	go func() { // it waits for answers: not on the link's reader
		defer r.wg.Done()
		r.resync(from.Name)
	}()
}
