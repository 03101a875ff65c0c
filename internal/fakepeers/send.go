package fakepeers

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/shardchat/shard/link"
	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/router"
)

// What the senders of the peers send the real node. A sender on peer p
// sending to user t does what p's router would: under owner routing it
// asks the real node where t is when the real node owns t and p has no
// cached answer (likewise for the sender's own key, for its other
// devices), and forwards to the real node only when t lives there; under
// broadcast it forwards every message to the real node. Only the messages
// that reach the real node are played: the rest cost it nothing, and at a
// cluster-wide rate they would be millions a second.

// cacheTTL is how long a peer trusts an answer it cached: the router's.
const cacheTTL = router.DefaultCacheTTL

var mids atomic.Int64

// Draws picks the messages of the peers' senders that reach the real node,
// from the cluster's uniform traffic (a sender among the peers' users, a
// recipient among all users).
type Draws struct {
	c *Cluster
	// touch: recipients that make a message reach the real node (they live
	// there, or, under owner routing, it owns them); rest: the others.
	touch, rest []int
	// ownedFrom: the peers' users the real node owns (owner routing: their
	// sender's copies are looked up there).
	ownedFrom, from []int
	// share is the fraction of the peers' messages that reach the real
	// node; pTouch the part of it whose recipient is in touch.
	share, pTouch float64
}

// Draws prepares the draws; call it after Settle.
func (c *Cluster) Draws() (*Draws, error) {
	if c.ring == nil {
		return nil, errNotSettled
	}
	d := &Draws{c: c}
	for u := 0; u < c.Users(); u++ {
		synthetic := c.Home(u) != 0
		if synthetic {
			d.from = append(d.from, u)
		}
		if c.cfg.Broadcast || c.Home(u) == 0 || c.owner[u] == 0 {
			d.touch = append(d.touch, u)
		} else {
			d.rest = append(d.rest, u)
		}
		if synthetic && !c.cfg.Broadcast && c.owner[u] == 0 {
			d.ownedFrom = append(d.ownedFrom, u)
		}
	}
	a := float64(len(d.touch)) / float64(c.Users())
	b := float64(len(d.ownedFrom)) / float64(len(d.from))
	d.share = a + b - a*b
	d.pTouch = a / d.share
	return d, nil
}

// Share is the fraction of the peers' messages that reach the real node:
// at a cluster-wide rate R the peers send R*(N-1)/N*Share of them.
func (d *Draws) Share() float64 { return d.share }

// Next draws one message that reaches the real node: exactly the uniform
// traffic restricted to those.
func (d *Draws) Next(rng *rand.Rand) (from, to int) {
	if rng.Float64() < d.pTouch {
		return d.from[rng.IntN(len(d.from))], d.touch[rng.IntN(len(d.touch))]
	}
	return d.ownedFrom[rng.IntN(len(d.ownedFrom))], d.rest[rng.IntN(len(d.rest))]
}

// Send plays the message of user from (living on a peer) to user to, with
// body, as that peer's router would. done gets, once every request to the
// real node has been answered, whether each answer was right: the lookups
// named where the users are, the forward was delivered to the recipient's
// connection there (under broadcast: to nobody when it lives elsewhere).
// Send reports whether anything reached the real node; when nothing did,
// done is not called.
func (c *Cluster) Send(from, to int, body string, done func(ok bool)) bool {
	if c.ring == nil || from >= c.Users() || to >= c.Users() || c.Home(from) == 0 {
		panic(fmt.Sprintf("fakepeers: Send(%d, %d) before Settle or from the real node", from, to))
	}
	p := c.peers[c.Home(from)-1]
	now := time.Now()
	var steps []func(next func(ok bool))
	if !c.cfg.Broadcast {
		for _, u := range []int{to, from} {
			if c.owner[u] == 0 && p.miss(u, now) {
				steps = append(steps, func(next func(bool)) { p.lookup(u, next) })
			}
		}
	}
	if c.cfg.Broadcast || c.Home(to) == 0 {
		steps = append(steps, func(next func(bool)) { p.forward(from, to, body, next) })
	}
	if len(steps) == 0 {
		return false
	}
	// The requests go one after the other, as the router's: it locates
	// before it forwards.
	allOK := true
	var run func(i int)
	run = func(i int) {
		if i == len(steps) {
			done(allOK)
			return
		}
		steps[i](func(ok bool) {
			if !ok {
				allOK = false
				c.stats.Failed.Add(1)
			}
			run(i + 1)
		})
	}
	run(0)
	return true
}

// miss says whether p has no cached location of user u, and caches one
// (the lookup that follows brings it).
func (p *peer) miss(u int, now time.Time) bool {
	p.cacheMu.Lock()
	defer p.cacheMu.Unlock()
	if exp, ok := p.cache[u]; ok && now.Before(exp) {
		return false
	}
	p.cache[u] = now.Add(cacheTTL)
	return true
}

func (p *peer) lookup(u int, next func(ok bool)) {
	c := p.c
	c.stats.LookupsSent.Add(1)
	payload := router.AppendLookup(nil, router.Key{Name: User(u)}, c.version, true)
	p.request(router.KindLookup, payload, func(b []byte, err error) {
		if err != nil {
			next(false)
			return
		}
		locs, err := router.DecodeLookupAnswer(b)
		next(err == nil && len(locs) == 1 && locs[0].Node == c.names[c.Home(u)])
	})
}

func (p *peer) forward(from, to int, body string, next func(ok bool)) {
	c := p.c
	c.stats.ForwardsSent.Add(1)
	m := protocol.Msg{Mid: "s" + strconv.FormatInt(mids.Add(1), 36), From: User(from), To: User(to), Body: body, TS: time.Now().UnixMilli()}
	frame := protocol.AppendMsg(make([]byte, 0, 160+len(body)), &m)
	payload := router.AppendDirectForward(make([]byte, 0, len(frame)+32), m.To, m.From, frame)
	want := 0
	if c.Home(to) == 0 {
		want = 1
	}
	p.request(router.KindForward, payload, func(b []byte, err error) {
		if err != nil {
			next(false)
			return
		}
		got, _, err := router.DecodeDelivered(b)
		next(err == nil && got == want)
	})
}

func (p *peer) request(k link.Kind, payload []byte, cb func([]byte, error)) {
	p.links.Request(p.c.cfg.Node, k, payload, cb)
}
