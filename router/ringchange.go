package router

import (
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/shardchat/shard/link"
	"github.com/shardchat/shard/ring"
)

// Member is a node as the router needs it.
type Member struct {
	Name string
	Link string // node-to-node address
	Inc  string // incarnation of its process
	// Left marks a member that left gracefully: it owns nothing any more,
	// but it is still draining, so its connections stay reachable until it
	// unregisters them.
	Left bool
	// Ring is the newest ring scheme the member routes by; zero is this
	// build's newest (ring.Latest). The ring is of the oldest scheme among
	// the alive members, so that a cluster being upgraded one node at a time
	// routes as its oldest node does.
	Ring ring.Scheme
}

// routingScheme is the ring scheme members route by: the oldest any alive
// one knows. A left member does not count: it owns nothing, and gossip
// keeps it listed for a while after it is gone, without a change to say
// when it forgets it; a node that joined after it left never hears of it.
// While it drains by its own ring, its unregistrations reach the owners it
// registered with, and its users, closed, connect again elsewhere.
func routingScheme(members []Member) ring.Scheme {
	s := ring.Latest
	for _, m := range members {
		if !m.Left && m.Ring != 0 && m.Ring < s {
			s = m.Ring
		}
	}
	return s
}

// view is one membership as the router routes by it; it is replaced whole.
type view struct {
	ring *ring.Ring
	// version names the members and their incarnations: nodes that agree on
	// it agree on every owner and on who must re-register.
	version string
	inc     map[string]string // alive and left members -> incarnation
}

func newView(members []Member, rg *ring.Ring) *view {
	v := &view{ring: rg, inc: make(map[string]string, len(members))}
	names := make([]string, 0, len(members))
	for _, m := range members {
		v.inc[m.Name] = m.Inc
		if !m.Left {
			names = append(names, m.Name+"\x00"+m.Inc)
		}
	}
	sort.Strings(names)
	h := xxhash.New()
	for _, n := range names {
		h.WriteString(n)
		h.WriteString("\x01")
	}
	// Builds before ring schemes route by ring.Original and hash no scheme:
	// nodes of both agree on the versions of the rings they agree on.
	if s := routingScheme(members); s != ring.Original {
		h.WriteString("\x02scheme " + strconv.Itoa(int(s)))
	}
	v.version = hex.EncodeToString(h.Sum(nil))
	return v
}

// ownerInc is the incarnation of key's owner on this view: a key whose owner
// restarted must be registered again, although its owner's name is the same.
func (v *view) ownerInc(name string) (owner, inc string) {
	owner = v.ring.Owner(name)
	return owner, v.inc[owner]
}

// registerBatch bounds the keys in one register frame.
const registerBatch = 1000

// SetMembers installs a new membership: the members that are alive form the
// ring, left ones stay reachable while they drain. The location cache goes
// (owners may have moved), the directory keeps only what this node still
// owns from holders still present, and every key whose owner changed, or
// whose owner restarted, is registered with its owner. Once those owners
// answered, this node tells the members that wait for it (fresh) that it is
// in sync. It returns the first registration error, if any.
func (r *Router) SetMembers(members []Member) error {
	r.membersMu.Lock()
	defer r.membersMu.Unlock()
	var names []string
	peers := make(map[string]link.Member, len(members))
	for _, m := range members {
		if !m.Left {
			names = append(names, m.Name)
		}
		if m.Name != r.cfg.Self {
			peers[m.Name] = link.Member{Addr: m.Link, Inc: m.Inc}
		}
	}
	rg, err := ring.NewScheme(routingScheme(members), names)
	if err != nil {
		return err
	}
	r.links.SetPeers(peers)
	old := r.view.Load()
	nv := newView(members, rg)
	for name, inc := range old.inc {
		if now, ok := nv.inc[name]; ok && now != inc {
			r.retired[name] = inc
		}
	}
	if old.version == nv.version {
		r.view.Store(nv) // a member may have moved between alive and left
		return nil
	}
	r.m.RingChanges.Inc()
	if from, to := old.ring.Scheme(), rg.Scheme(); from != to && old.ring.Len() > 0 {
		r.log.Info("ring scheme changed: the cluster routes by the oldest scheme its members know", "from", from, "to", to, "newest", ring.Latest)
	}
	self := r.cfg.Self
	now := time.Now()
	fresh := freshDirectories(old, nv, self)
	awaited := r.awaited(old, nv, members, fresh)
	for _, m := range r.settle.reset(nv.version, old.version, awaited, now) {
		r.askToRegisterAgain(m, nv.version)
	}
	r.wg.Add(1)
	go r.chaseSynced(nv.version)

	// Swap the view and collect the moved keys under the index lock, so
	// that no registration slips between the two with the old owner.
	r.local.mu.Lock()
	r.view.Store(nv)
	r.cache.reset()
	movedAway := r.dir.Retain(func(node, inc string) bool {
		current, ok := nv.inc[node]
		return ok && (inc == "" || inc == current || inc != r.retired[node])
	}, func(k Key) bool { return old.ring.Owner(k.Name) == self },
		func(k Key) bool { return rg.Owner(k.Name) == self }, now)
	r.settle.holdersDropped(movedAway)
	batches := make(map[string][]registration)
	for key, conns := range r.local.conns {
		owner, inc := nv.ownerInc(key.Name)
		if oldOwner, oldInc := old.ownerInc(key.Name); owner == oldOwner && inc == oldInc {
			continue
		}
		batches[owner] = append(batches[owner], registration{key, len(conns)})
	}
	waits := make(map[string][]<-chan error, len(batches))
	moved := 0
	for owner, regs := range batches {
		moved += len(regs)
		waits[owner] = r.registerBatches(owner, regs)
	}
	r.local.mu.Unlock()

	r.presenceMembersChanged(nv)
	r.m.Reregistration.Add(float64(moved))
	r.log.Info("membership changed", "members", rg.Len(), "version", nv.version, "reregistered", moved)
	var firstErr error
	failed := make(map[string]bool)
	for owner, ws := range waits {
		if err := firstError(ws); err != nil {
			failed[owner] = true
			if firstErr == nil {
				firstErr = fmt.Errorf("registering with %s: %w", owner, err)
			}
		}
	}
	// An owner told we are in sync while it lacks some of our keys would
	// answer "offline" for them: it hears so once their retry got through,
	// and so does one with keys still in the retries from before.
	for owner := range r.retryOwners(nv) {
		failed[owner] = true
	}
	r.announceSynced(old, nv, fresh, failed)
	for owner := range failed {
		r.oweSynced(owner, nv.version, r.movedFrom(old, nv, owner))
	}
	r.askResync(old, nv)
	return firstErr
}

// registerBatches sends regs to owner in frames of at most registerBatch
// keys, as registerLocked; the caller holds the index lock.
func (r *Router) registerBatches(owner string, regs []registration) []<-chan error {
	var waits []<-chan error
	for len(regs) > 0 {
		n := min(len(regs), registerBatch)
		waits = append(waits, r.registerLocked(owner, regs[:n]))
		regs = regs[n:]
	}
	return waits
}

// firstError waits for every answer and returns the first error.
func firstError(waits []<-chan error) error {
	var first error
	for _, w := range waits {
		if err := <-w; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// askResync asks each member that is new in this view to register again
// what it holds that this node owns. A member that comes back after a
// partition never saw this node leave its own view, so it would not
// re-register on its own, yet this node dropped its entries when it
// declared it dead. For a member that is simply new it costs one message.
// The question is asked again (for about 3 s) while it fails: a link that
// breaks as the partition heals must not leave those entries missing.
func (r *Router) askResync(old, nv *view) {
	payload := link.AppendString(nil, nv.version)
	for _, m := range nv.ring.Members() {
		if m == r.cfg.Self || (old.ring.Has(m) && old.inc[m] == nv.inc[m]) {
			continue
		}
		inc := nv.inc[m]
		sameMember := func() bool {
			v := r.view.Load()
			return v.ring.Has(m) && v.inc[m] == inc
		}
		r.requestWhile(m, kindResync, 1, payload, 7, sameMember, func(err error) {
			if err != nil {
				r.log.Warn("member not asked to register again", "peer", m, "err", err)
			}
		})
	}
}

// freshDirectories are the members of nv whose directories, after the
// change from old, lack entries they own until the holders re-register: the
// members given partitions, the members new or restarted since old, and
// every member when self is (its first view: nothing told it what the
// others hold). Only they wait for self's synced; the others own nothing
// they did not hold entries for. On ring.Fine a join gives partitions to the
// newcomer alone, a leave to about 120 of 255 members at 256 (ring.Gainers).
func freshDirectories(old, nv *view, self string) []string {
	members := nv.ring.Members()
	if nv.newSince(old, self) {
		return members
	}
	gainers := nv.ring.Gainers(old.ring)
	fresh := members[:0]
	for _, m := range members {
		if nv.newSince(old, m) || slices.Contains(gainers, m) {
			fresh = append(fresh, m)
		}
	}
	return fresh
}

// awaited are the members this node, as an owner, waits for after the
// change from old to nv. Given partitions (fresh), it waits for every member
// of the new ring, and for a member that is leaving just now: it still
// holds connections and re-registers them with their new owners while it
// drains. Given none, it holds every entry for what it owns but those of
// members new to it. And the members the change before still waited for
// (a report on its way, or none came before its deadline) are waited for
// again while they are members: what they hold may still be missing here.
// Not a leaving member that routes by an older ring scheme than nv's.
func (r *Router) awaited(old, nv *view, members []Member, fresh []string) []string {
	want := make(map[string]bool)
	if slices.Contains(fresh, r.cfg.Self) {
		for _, m := range nv.ring.Members() {
			want[m] = true
		}
		for _, m := range members {
			if m.Left && old.ring.Has(m.Name) {
				want[m.Name] = true
			}
		}
	} else {
		for _, m := range nv.ring.Members() {
			if nv.newSince(old, m) {
				want[m] = true
			}
		}
	}
	carried, _ := r.settle.waitingFor(old.version)
	for _, m := range carried {
		if _, ok := nv.inc[m]; ok {
			want[m] = true
		}
	}
	// A leaving member of an older scheme drains by its own ring, whose
	// version this node's never is: its report would never count.
	for _, m := range members {
		if m.Left && m.Ring != 0 && m.Ring < nv.ring.Scheme() {
			delete(want, m.Name)
		}
	}
	out := make([]string, 0, len(want))
	for m := range want {
		out = append(out, m)
	}
	return out
}

// newSince reports whether member m is new in v since old, or restarted.
func (v *view) newSince(old *view, m string) bool {
	inc, ok := old.inc[m]
	return !ok || inc != v.inc[m]
}
