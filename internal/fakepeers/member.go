package fakepeers

import (
	"fmt"
	"io"
	"log"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/shardchat/shard/gossip"
	"github.com/shardchat/shard/link"
	"github.com/shardchat/shard/ring"
)

// Each peer is a memberlist member of the real node's cluster, speaking
// package gossip's wire format (its label, its JSON metadata) but not its
// failure detector's tuning. Hundreds of memberlists in one process, with
// gossip's 500 ms probes and 250 ms probe timeout, probed each other 500
// times a second and, on a shared 2-core box, missed acks: at 256 peers a
// third of them were declared dead during the setup (they had suspected
// each other) and the node's ring never settled. The peers' own probes are
// not what the real node is measured on: they probe rarely and patiently.
// Everything the real node sees of them is unchanged: they answer its
// probes at once, and gossip at its rate, so suspicions are refuted fast.

const (
	// peerProbeInterval and peerProbeTimeout: how often a peer probes
	// another member, and how long it waits for the ack.
	peerProbeInterval = 10 * time.Second
	peerProbeTimeout  = 3 * time.Second
	// peerPushPull: full-state exchanges are O(N) each; the node's own
	// (every 15 s) keep the peers' views whole.
	peerPushPull = 2 * time.Minute
	// peerRetransmit: each peer passes on a piece of news about
	// log10(N) times (memberlist's default, 4 log10(N), kept 255 peers
	// gossiping the 255 joins at a core for half a minute after a setup).
	peerRetransmit = 1
	// joinAttempts: a join is a TCP push/pull with the real node, which on
	// the busy box sometimes closes it (EOF) after its 2 s timeout.
	joinAttempts = 5
)

// metaDelegate announces a peer's metadata; memberlist asks nothing else
// of it.
type metaDelegate []byte

func (d metaDelegate) NodeMeta(int) []byte                  { return d }
func (metaDelegate) NotifyMsg([]byte)                       {}
func (metaDelegate) GetBroadcasts(int, int) [][]byte        { return nil }
func (metaDelegate) LocalState(bool) []byte                 { return nil }
func (metaDelegate) MergeRemoteState(buf []byte, join bool) {}

// startMember starts the memberlist of p, on its own address, and joins
// the real node.
func (p *peer) startMember() error {
	meta, err := gossip.EncodeMeta(gossip.Meta{Link: p.ln.Addr().String(), Inc: p.inc, Ring: int(ring.Latest)})
	if err != nil {
		return err
	}
	c := memberlist.DefaultLANConfig()
	c.Name = p.name
	c.BindAddr, c.BindPort, c.AdvertisePort = peerAddr(p.index), 0, 0
	c.Label = gossip.Label
	c.ProbeInterval, c.ProbeTimeout = peerProbeInterval, peerProbeTimeout
	c.PushPullInterval = peerPushPull
	c.RetransmitMult = peerRetransmit
	c.Delegate = metaDelegate(meta)
	c.Logger = log.New(io.Discard, "", 0)
	ml, err := memberlist.Create(c)
	if err != nil {
		return fmt.Errorf("fakepeers: %s gossip: %w", p.name, err)
	}
	p.ml = ml
	for i := 1; ; i++ {
		_, err := ml.Join([]string{p.c.cfg.NodeGossip})
		if err == nil {
			return nil
		}
		if i == joinAttempts {
			return fmt.Errorf("fakepeers: %s joining %s, %d attempts: %w", p.name, p.c.cfg.NodeGossip, i, err)
		}
		time.Sleep(time.Duration(i) * 200 * time.Millisecond)
	}
}

// nodeMember is the real node as p's memberlist shows it, and the ring
// scheme it routes by.
func (p *peer) nodeMember() (link.Member, ring.Scheme, bool) {
	for _, m := range p.ml.Members() {
		if m.Name != p.c.cfg.Node {
			continue
		}
		w, ok := gossip.DecodeMeta(m.Meta)
		if !ok {
			return link.Member{}, 0, false
		}
		return link.Member{Addr: w.Link, Inc: w.Inc}, ring.Announced(w.Ring), true
	}
	return link.Member{}, 0, false
}
