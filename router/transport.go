package router

import "github.com/shardchat/shard/link"

// Transport carries the router's requests to its peers and serves theirs:
// link.Links between processes, an in-memory network in a simulation.
type Transport interface {
	// Serve starts serving the peers' requests with h.
	Serve(h link.Handler)
	// SetPeers replaces the peers, by name: their addresses, and the
	// incarnations that a peer without a cluster key must name to be let in.
	SetPeers(peers map[string]link.Member)
	// RequestCounted sends a request to peer; cb gets the reply or an
	// error, exactly once. It reports whether the request went out, and
	// then has added n to sent, before cb can run.
	RequestCounted(peer string, k link.Kind, payload []byte, sent link.Counter, n float64, cb func([]byte, error)) bool
	// Queued is the number of frames waiting to go out.
	Queued() int
	// Close stops it, failing requests still pending.
	Close()
}
