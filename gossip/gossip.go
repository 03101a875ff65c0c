// Package gossip knows who is alive in the cluster and at which addresses: it runs
// hashicorp/memberlist and turns its events into copied member sets and a change signal.
// It never imports session, router or ring, and never carries chat traffic.
package gossip

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Gossip is this node's membership in the cluster. Its methods are safe for concurrent use.
type Gossip struct {
	cfg       *resolved
	ml        *memberlist.Memberlist
	view      *view
	localAddr string

	// lifeMu orders Leave and Shutdown: memberlist panics on Leave after Shutdown.
	lifeMu sync.Mutex
	left   bool
	shut   bool

	stop chan struct{}  // closed by Shutdown; stops resync
	wg   sync.WaitGroup // resync
}

// Start creates this node's memberlist with the tuned configuration (see the constants in
// config.go) and, when cfg.Join is not empty, joins through the seeds, retrying until one
// answers or cfg.JoinTimeout passes. It fails when the address cannot be bound, when no seed
// answers, when the cluster key does not match, or when a live member already uses cfg.Name.
func Start(cfg Config) (*Gossip, error) {
	r, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	v := newView(r.Name, r.Logger, r.encodedMeta)
	ml, err := memberlist.Create(r.memberlistConfig(delegates{v}))
	if err != nil {
		return nil, fmt.Errorf("gossip: listen on %s: %w", r.Bind, err)
	}
	self, ok := v.self()
	if !ok { // memberlist announces itself to its own delegate inside Create
		_ = ml.Shutdown()
		return nil, errors.New("gossip: memberlist did not report the local node")
	}
	g := &Gossip{cfg: r, ml: ml, view: v, localAddr: self.Addr, stop: make(chan struct{})}

	seeds := g.seeds(r.Join)
	if len(seeds) > 0 {
		if err := g.join(seeds, r.JoinTimeout); err != nil {
			_ = ml.Shutdown()
			return nil, err
		}
	}
	if err := v.finishStart(); err != nil {
		_ = ml.Shutdown()
		return nil, fmt.Errorf("gossip: %w", err)
	}
	if len(seeds) > 0 {
		g.wg.Add(1)
		go g.resync()
	}
	g.wg.Add(1)
	go g.reconnect()
	return g, nil
}

// reconnectInterval is how often members declared dead are asked to join
// again. memberlist gossips to the dead only for GossipToTheDeadTime (15 s):
// after a longer partition both sides would stay split for good. This is
// what serf's reconnect does, at a pace fit for a few nodes on a LAN.
const reconnectInterval = 2 * time.Second

// reconnect tries, every reconnectInterval, to join the members this node
// saw die (not the ones that left: they said goodbye). A partition heals
// into one cluster once the network returns.
func (g *Gossip) reconnect() {
	defer g.wg.Done()
	t := time.NewTicker(reconnectInterval)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
		var dead []string
		for _, m := range g.Members() {
			if m.State == StateDead && m.Addr != "" {
				dead = append(dead, m.Addr)
			}
		}
		if n, err := g.joinRunning(dead); err == nil && n > 0 {
			g.cfg.Logger.Info("rejoined members thought dead", "answered", n)
		}
	}
}

// seeds drops our own address from the seed list: contacting ourselves "succeeds" and
// proves nothing, which matters when every node is given the same list.
func (g *Gossip) seeds(join []string) []string {
	var out []string
	for _, s := range join {
		if s = strings.TrimSpace(s); s != "" && s != g.localAddr {
			out = append(out, s)
		}
	}
	return out
}

// Join backoff: the first retry comes soon, for seeds that are starting at the same moment;
// the cap keeps a node that waits for its seeds from hammering them.
const (
	joinBackoffMin = 100 * time.Millisecond
	joinBackoffMax = 2 * time.Second
)

func (g *Gossip) join(seeds []string, timeout time.Duration) error {
	list := strings.Join(seeds, ",")
	deadline := time.Now().Add(timeout)
	backoff := joinBackoffMin
	for attempt := 1; ; attempt++ {
		n, err := g.ml.Join(seeds)
		err = oneLine(err)
		if cerr := g.view.conflictErr(); cerr != nil {
			return fmt.Errorf("gossip: join %s: %w", list, cerr)
		}
		if err == nil {
			if members := g.ml.NumMembers(); members > 1 {
				g.cfg.Logger.Debug("joined the cluster", "seeds", list, "answered", n, "members", members, "attempts", attempt)
				return nil
			}
			err = fmt.Errorf("%d seed(s) answered but no other member is visible", n)
		} else if permanentJoinError(err) {
			return fmt.Errorf("gossip: join %s: %w", list, err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("gossip: join %s: no seed answered within %v (%d attempts): %w", list, timeout, attempt, err)
		}
		g.cfg.Logger.Debug("join failed, will retry", "seeds", list, "attempt", attempt, "err", err)
		wait := backoff/2 + rand.N(backoff/2+1) // jitter: nodes started together spread out
		time.Sleep(min(wait, left))
		backoff = min(2*backoff, joinBackoffMax)
	}
}

// oneLine renders memberlist's multierror ("1 error occurred:\n\t* failed to join ...")
// as one line, so that the one-line start-up error the README promises (an
// unreachable --join exits 1 with one line) stays one line.
func oneLine(err error) error {
	var multi interface{ WrappedErrors() []error }
	if !errors.As(err, &multi) {
		return err
	}
	var msgs []string
	for _, e := range multi.WrappedErrors() {
		msgs = append(msgs, e.Error())
	}
	return errors.New(strings.Join(msgs, "; "))
}

// permanentJoinError reports errors that retrying cannot cure: a cluster key that does not
// match. memberlist formats its errors with %v, so only the text is left to inspect; an error
// missed here is still retried until JoinTimeout, only slower to report.
func permanentJoinError(err error) bool {
	s := err.Error()
	return strings.Contains(s, "no installed keys could decrypt") ||
		strings.Contains(s, "encryption is not configured") ||
		strings.Contains(s, "remote state is not encrypted")
}

// resync repeats a push/pull with the members we know, once, just after DeadNodeReclaimTime.
// A node that restarts under its old name at a new address, after the others declared it dead
// but sooner than DeadNodeReclaimTime, is ignored by them while it believes it has joined.
// Without this, that split lasts until a periodic push/pull happens to heal it (up to
// pushPullInterval, 15 s); with it, about deadNodeReclaimTime + 1 s. For everyone else it is
// one cheap state exchange.
func (g *Gossip) resync() {
	defer g.wg.Done()
	t := time.NewTimer(deadNodeReclaimTime + time.Second)
	defer t.Stop()
	select {
	case <-g.stop:
		return
	case <-t.C:
	}
	var peers []string
	for _, m := range g.Alive() {
		if m.Name != g.cfg.Name {
			peers = append(peers, m.Addr)
		}
	}
	if _, err := g.joinRunning(peers); err != nil {
		g.cfg.Logger.Debug("resync push/pull failed", "err", err)
	}
}

// joinRunning exchanges state with addrs unless there are none or this node
// has left or shut down (memberlist panics on a join after Shutdown).
func (g *Gossip) joinRunning(addrs []string) (int, error) {
	g.lifeMu.Lock()
	done := g.left || g.shut
	g.lifeMu.Unlock()
	if done || len(addrs) == 0 {
		return 0, nil
	}
	return g.ml.Join(addrs)
}

// LocalName is this node's name.
func (g *Gossip) LocalName() string { return g.cfg.Name }

// LocalAddr is the gossip host:port other nodes reach this one at: Advertise if set, else the
// bound address with the real port (useful after Bind port 0).
func (g *Gossip) LocalAddr() string { return g.localAddr }

// Alive returns the members that belong in the ring: alive (and, see StateAlive, suspect)
// ones, this node included unless it has left. Sorted by name; the slice is the caller's.
func (g *Gossip) Alive() []Member {
	return g.view.list(func(s State) bool { return s == StateAlive || s == StateSuspect })
}

// Members returns every member known, with its state: the alive ones and those that died or
// left within the last minute (forgetAfter). This node included; sorted by name.
func (g *Gossip) Members() []Member {
	return g.view.list(func(State) bool { return true })
}

// Changes receives a signal, coalesced (capacity 1), after any member joins, leaves, fails or
// changes its Meta. Read Alive or Members after receiving it. A signal is already pending when
// Start returns (this node's own join), so a consumer builds its first ring from it. The
// channel is never closed: select on it together with your own stop channel.
func (g *Gossip) Changes() <-chan struct{} { return g.view.changes }

// Leave says goodbye: it announces the intent to leave (so that peers list this node as left,
// not dead), then runs memberlist's Leave, waiting at most timeout in all (0: no limit) for
// the news to go out. Peers learn it in about 100-400 ms. Call Shutdown afterwards; a node
// that has left cannot join again. Calling Leave again does nothing; after Shutdown it fails.
func (g *Gossip) Leave(timeout time.Duration) error {
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	if g.shut {
		return errors.New("gossip: leave after shutdown")
	}
	if g.left {
		return nil
	}
	g.left = true
	start := time.Now()

	// The intent goes out as an update of our metadata; memberlist's own leave message
	// cannot carry it. Its size was checked by Config.resolve.
	meta, _ := encodeMeta(g.cfg.Meta, true)
	g.view.setMeta(meta)
	if err := g.ml.UpdateNode(timeout / 2); err != nil {
		g.cfg.Logger.Debug("leave intent not confirmed; some peers may list this node dead, not left", "err", err)
	}
	intent := time.Since(start)

	rest := time.Duration(0)
	if timeout > 0 {
		rest = max(timeout-time.Since(start), time.Millisecond)
	}
	if err := g.ml.Leave(rest); err != nil {
		return fmt.Errorf("gossip: leave: %w", err)
	}
	g.cfg.Logger.Debug("left the cluster", "intent", intent, "total", time.Since(start))
	return nil
}

// Shutdown stops gossiping and closes the sockets. Without a Leave before it, the others see
// a crash and declare this node dead within about 5 s. Calling it again does nothing.
func (g *Gossip) Shutdown() error {
	g.lifeMu.Lock()
	if g.shut {
		g.lifeMu.Unlock()
		return nil
	}
	g.shut = true
	close(g.stop)
	g.lifeMu.Unlock()

	err := g.ml.Shutdown()
	g.wg.Wait()
	if err != nil {
		return fmt.Errorf("gossip: shutdown: %w", err)
	}
	return nil
}
