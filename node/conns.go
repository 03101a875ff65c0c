package node

import (
	"net/netip"

	"github.com/valyala/fasthttp"

	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/session"
)

// The client connections of this node, counted for the drain and for the
// caps: --max-conns in all, --max-conns-per-user, --max-conns-per-ip. The
// caps are per node, which needs no word with other nodes: a user may hold
// as many connections on each node.

// connSlot is what a connection counts against.
type connSlot struct {
	user string
	addr netip.Prefix
}

// refusal is an HTTP answer to an upgrade; a zero status lets it in.
type refusal struct {
	status        int
	code, message string
}

// addConn records a connection for the drain unless the node is draining
// or a cap is reached, and says why not.
func (n *Node) addConn(c *session.Conn, addr netip.Prefix) refusal {
	n.connMu.Lock()
	defer n.connMu.Unlock()
	slot := connSlot{c.User(), addr}
	switch {
	case n.draining.Load() || len(n.conns) >= n.cfg.MaxConns:
		return refusal{fasthttp.StatusServiceUnavailable, protocol.CodeUnavailable, "this node is draining or at its connection limit; try another"}
	case n.perUser[slot.user] >= n.cfg.MaxConnsPerUser:
		return refusal{fasthttp.StatusTooManyRequests, protocol.CodeTooManyConns, "this user holds --max-conns-per-user connections on this node already; close one"}
	case n.cfg.MaxConnsPerIP > 0 && n.perAddr[addr] >= n.cfg.MaxConnsPerIP:
		return refusal{fasthttp.StatusTooManyRequests, protocol.CodeTooManyConns, "this address holds --max-conns-per-ip connections on this node already; close one"}
	}
	n.conns[c] = slot
	n.perUser[slot.user]++
	n.perAddr[addr]++
	n.handlers.Add(1)
	return refusal{}
}

func (n *Node) removeConn(c *session.Conn) {
	n.connMu.Lock()
	slot := n.conns[c]
	delete(n.conns, c)
	uncount(n.perUser, slot.user)
	uncount(n.perAddr, slot.addr)
	n.connMu.Unlock()
	n.handlers.Done()
}

// uncount takes one from k's count and forgets k at zero, so that the maps
// hold only what holds a connection.
func uncount[K comparable](counts map[K]int, k K) {
	if counts[k] <= 1 {
		delete(counts, k)
		return
	}
	counts[k]--
}

func (n *Node) connCount() int {
	n.connMu.Lock()
	defer n.connMu.Unlock()
	return len(n.conns)
}
