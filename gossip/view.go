package gossip

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// forgetAfter 60 s: how long a dead or left member stays in Members(), long enough for an
// operator to see it in /api/cluster, short enough that the list stays bounded under churn.
const forgetAfter = 60 * time.Second

// view is this node's member table, built only from memberlist's callbacks. Each callback
// copies what it needs from the *memberlist.Node it is handed, while memberlist still holds
// its node lock, so nothing here ever reads memberlist's table concurrently with its writes
// (the Members() race, memberlist #306).
//
// Lock order: memberlist's nodeLock, then view.mu. Code holding view.mu must never call
// into memberlist.
type view struct {
	name    string
	logger  *slog.Logger
	changes chan struct{}
	meta    atomic.Pointer[[]byte] // what NodeMeta announces; swapped by Leave

	mu       sync.Mutex
	members  map[string]*entry
	started  bool  // Start has returned: conflicts are logged, no longer fatal
	conflict error // first claim on our own name seen while starting
}

type entry struct {
	Member
	since   time.Time // when State last changed
	leaving bool      // the member announced it is leaving (wireMeta.Leaving)
}

func newView(name string, logger *slog.Logger, meta []byte) *view {
	v := &view{
		name:    name,
		logger:  logger,
		changes: make(chan struct{}, 1),
		members: make(map[string]*entry),
	}
	v.setMeta(meta)
	return v
}

func (v *view) setMeta(b []byte) { v.meta.Store(&b) }

// signal tells the consumer of Changes that the member set moved. It never blocks: a pending
// signal already covers this change, because the consumer reads the whole set afterwards.
func (v *view) signal() {
	select {
	case v.changes <- struct{}{}:
	default:
	}
}

// self returns our own entry, which memberlist creates (through NotifyJoin) inside Create.
func (v *view) self() (Member, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.members[v.name]
	if !ok {
		return Member{}, false
	}
	return e.Member, true
}

// list copies the members whose state passes keep, sorted by name, and forgets dead and left
// members older than forgetAfter.
func (v *view) list(keep func(State) bool) []Member {
	now := time.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]Member, 0, len(v.members))
	for name, e := range v.members {
		if (e.State == StateDead || e.State == StateLeft) && now.Sub(e.since) > forgetAfter {
			delete(v.members, name)
			continue
		}
		if keep(e.State) {
			out = append(out, e.Member)
		}
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// finishStart ends the window in which a claim on our name fails Start.
func (v *view) finishStart() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.started = true
	return v.conflict
}

func (v *view) conflictErr() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.conflict
}

// nameClaimed records that another live node at addr uses our name. While starting, that is
// fatal (Start fails); afterwards we are the incumbent and memberlist already ignores the
// newcomer, so it is only logged.
func (v *view) nameClaimed(addr string) {
	v.mu.Lock()
	started := v.started
	if !started && v.conflict == nil {
		v.conflict = fmt.Errorf("node name %q is already used by a live member at %s", v.name, addr)
	}
	v.mu.Unlock()
	if started {
		v.logger.Warn("refused a node that claims this node's name", "addr", addr)
	}
}

// delegates implements memberlist's hooks for one view. Every method may run under
// memberlist's node lock (see view), so none of them blocks or calls back into memberlist.
type delegates struct{ v *view }

var (
	_ memberlist.Delegate         = delegates{}
	_ memberlist.EventDelegate    = delegates{}
	_ memberlist.ConflictDelegate = delegates{}
	_ memberlist.MergeDelegate    = delegates{}
)

// NodeMeta announces our Meta. Its size was checked against limit in Config.resolve.
func (d delegates) NodeMeta(limit int) []byte { return *d.v.meta.Load() }

// We keep the data plane off memberlist: no user messages, no broadcasts, no user state.
// Measured with memberlist v0.7.0 on loopback when it was chosen: SendReliable dials a TCP
// connection per message (8.2k msg/s, and 3,000 messages left about 3,000 sockets in
// TIME_WAIT); SendBestEffort's UDP messages share a LIFO queue that drops past 1024 with
// the failure detector's (a 20k burst lost 15 % and reordered most of the rest). Chat
// traffic goes over the link package's persistent connections instead.
func (d delegates) NotifyMsg([]byte)                           {}
func (d delegates) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d delegates) LocalState(join bool) []byte                { return nil }
func (d delegates) MergeRemoteState(buf []byte, join bool)     {}

// NotifyJoin: a member is new, or came back from dead or left.
func (d delegates) NotifyJoin(n *memberlist.Node) {
	v := d.v
	meta, leaving, ok := decodeMeta(n.Meta)
	m := Member{Name: n.Name, Addr: nodeAddr(n), Meta: meta, State: StateAlive}
	v.mu.Lock()
	v.members[m.Name] = &entry{Member: m, since: time.Now(), leaving: leaving}
	v.mu.Unlock()
	if m.Name != v.name {
		v.logger.Info("member joined", "peer", m.Name, "addr", m.Addr, "http", meta.HTTP, "link", meta.Link)
	}
	if !ok {
		v.logger.Warn("member announced unreadable metadata", "peer", m.Name, "addr", m.Addr)
	}
	v.signal()
}

// NotifyUpdate: a member changed its metadata (or, on reclaim, its address).
func (d delegates) NotifyUpdate(n *memberlist.Node) {
	v := d.v
	meta, leaving, _ := decodeMeta(n.Meta)
	addr := nodeAddr(n)
	v.mu.Lock()
	e, ok := v.members[n.Name]
	if !ok {
		e = &entry{Member: Member{Name: n.Name, State: StateAlive}, since: time.Now()}
		v.members[n.Name] = e
	}
	e.Addr, e.Meta, e.leaving = addr, meta, leaving
	v.mu.Unlock()
	if leaving && n.Name != v.name {
		v.logger.Info("member is leaving", "peer", n.Name)
	} else {
		v.logger.Debug("member updated", "peer", n.Name, "addr", addr, "http", meta.HTTP, "link", meta.Link)
	}
	v.signal()
}

// NotifyLeave: a member left or was declared dead. memberlist v0.7.0 does not say which: the
// n.State it hands us is never written (it is shadowed by nodeState.State). A member that
// announced its leave before going counts as left; anything else failed.
func (d delegates) NotifyLeave(n *memberlist.Node) {
	v := d.v
	v.mu.Lock()
	e, ok := v.members[n.Name]
	if !ok {
		meta, leaving, _ := decodeMeta(n.Meta)
		e = &entry{Member: Member{Name: n.Name, Addr: nodeAddr(n), Meta: meta}, leaving: leaving}
		v.members[n.Name] = e
	}
	e.State = StateDead
	if e.leaving {
		e.State = StateLeft
	}
	e.since = time.Now()
	state := e.State
	v.mu.Unlock()
	switch {
	case n.Name == v.name:
		v.logger.Debug("this node left the cluster")
	case state == StateLeft:
		v.logger.Info("member left", "peer", n.Name)
	default:
		v.logger.Info("member failed", "peer", n.Name)
	}
	v.signal()
}

// NotifyConflict: a node at another address claims a name memberlist already knows alive (or
// recently dead). memberlist keeps the one it knows and ignores the other.
func (d delegates) NotifyConflict(existing, other *memberlist.Node) {
	v := d.v
	if existing.Name == v.name {
		v.nameClaimed(nodeAddr(other))
		return
	}
	v.logger.Warn("two nodes claim the same name; the newcomer is ignored",
		"peer", existing.Name, "addr", nodeAddr(existing), "other_addr", nodeAddr(other))
}

// NotifyMerge runs before a join's push/pull state is merged, on both the joiner and the
// node it contacted. A live member with our name at another address means two nodes share a
// name: refuse the merge, so that the join fails with a clear error instead of memberlist's
// silent "joined, but alone".
func (d delegates) NotifyMerge(peers []*memberlist.Node) error {
	v := d.v
	self, ok := v.self()
	if !ok {
		return nil
	}
	for _, p := range peers {
		if p.Name != v.name || p.State == memberlist.StateDead || p.State == memberlist.StateLeft {
			continue
		}
		if addr := nodeAddr(p); addr != self.Addr {
			v.nameClaimed(addr)
			return fmt.Errorf("node name %q is already used by a live member at %s", v.name, addr)
		}
	}
	return nil
}
