package fakepeers

import (
	"sync/atomic"

	"github.com/shardchat/shard/link"
	"github.com/shardchat/shard/router"
)

// The real node's requests to a peer, answered as the peer's router would:
// a forward by the count of connections of its user here (one, where the
// user lives), a lookup by where the key's user lives, a registration kept
// for the lookups of the real node's own users.

// Stats counts what the peers served and sent.
type Stats struct {
	LookupsIn   atomic.Int64 // lookups the real node asked of synthetic owners
	RegistersIn atomic.Int64 // registrations it sent them
	OtherIn     atomic.Int64 // any other request (synced, resync, invalidate, ...)

	ForwardsSent atomic.Int64 // forwards the peers' senders sent the real node
	LookupsSent  atomic.Int64 // lookups they asked of it as an owner
	Failed       atomic.Int64 // requests to the real node that failed or got a wrong answer
}

// Stats are the counts so far.
func (c *Cluster) Stats() *Stats { return &c.stats }

// ForwardsIn is, by peer (index 0 is peer p1), how many forwards the real
// node sent it, and how many of those were for a user that does not live
// there (under owner routing a stray is a routing error; under broadcast
// every forward but one in N is one).
func (c *Cluster) ForwardsIn() (got, strays []int64) {
	for _, p := range c.peers {
		got = append(got, p.forwardsIn.Load())
		strays = append(strays, p.strays.Load())
	}
	return got, strays
}

func (p *peer) serve(_ link.Peer, k link.Kind, payload []byte, reply func([]byte)) {
	c := p.c
	switch k {
	case router.KindForward:
		p.forwardsIn.Add(1)
		name, room, err := router.ForwardTarget(payload)
		if err != nil || room {
			p.strays.Add(1)
			reply(nil)
			return
		}
		got := 0
		if u, ok := userIndex(name); ok && u < c.Users() && c.Home(u) == p.index {
			got = 1
		} else {
			p.strays.Add(1)
		}
		reply(router.AppendDelivered(nil, got, 0))
	case router.KindLookup:
		c.stats.LookupsIn.Add(1)
		key, err := router.DecodeLookup(payload)
		if err != nil {
			reply(nil)
			return
		}
		reply(router.AppendLookupAnswer(nil, c.locations(key)))
	case router.KindRegister:
		c.stats.RegistersIn.Add(1)
		regs, err := router.DecodeRegister(payload)
		if err == nil {
			c.regsMu.Lock()
			for _, r := range regs {
				if r.Count > 0 {
					c.regs[r.Key] = r.Count
				} else {
					delete(c.regs, r.Key)
				}
			}
			c.regsMu.Unlock()
		}
		reply(nil)
	case router.KindSynced:
		// Answered as a node of this build does, so that the node does not
		// tell it again in an older build's form.
		c.stats.OtherIn.Add(1)
		reply(router.AppendSyncedAnswer(nil))
	default:
		c.stats.OtherIn.Add(1)
		reply(nil)
	}
}

// locations is where key's connections are: the peer a user lives on, or
// the real node for its own users, as it registered them.
func (c *Cluster) locations(key router.Key) []router.Location {
	if key.Room || key.Watch {
		return nil
	}
	u, ok := userIndex(key.Name)
	if !ok || u >= c.Users() {
		return nil
	}
	if h := c.Home(u); h != 0 {
		return []router.Location{{Node: c.names[h], Count: 1}}
	}
	c.regsMu.Lock()
	n := c.regs[key]
	c.regsMu.Unlock()
	if n == 0 {
		return nil
	}
	return []router.Location{{Node: c.cfg.Node, Count: n}}
}

// userIndex reads the index of user "u<i>".
func userIndex(name string) (int, bool) {
	if len(name) < 2 || name[0] != 'u' {
		return 0, false
	}
	u := 0
	for _, ch := range name[1:] {
		if ch < '0' || ch > '9' || u > 1<<30 {
			return 0, false
		}
		u = u*10 + int(ch-'0')
	}
	return u, true
}
