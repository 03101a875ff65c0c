package protocol

// NodeFigures is the answer of GET /api/node (docs/protocol.md §8.7): one
// node's own figures, read from its own counters, as the cluster view shows
// them. The node serving the view asks every member for them once a second.
type NodeFigures struct {
	Name string `json:"name"`
	// Inc is the incarnation of the process: after a restart under the same
	// name it changes, and the counters start again from 0.
	Inc string `json:"inc"`
	// State is "ready", "draining" or "starting".
	State string `json:"state"`
	// Time is when the figures were read, in Unix milliseconds of the node's
	// own clock: rates divide differences of counters by differences of it.
	Time        int64        `json:"time"`
	Ring        NodeRing     `json:"ring"`
	Connections int          `json:"connections"` // open client connections (shard_connections)
	Counters    NodeCounters `json:"counters"`
	// Links are this node's links with each peer, sorted by name.
	Links []NodeLink `json:"links"`
}

// NodeRing is the ring a node routes by, and its own share of it.
type NodeRing struct {
	Version    string `json:"version"`    // as in /api/cluster: equal on nodes that agree
	Members    int    `json:"members"`    // members in the ring
	Partitions int    `json:"partitions"` // partitions this node owns in that ring
	Total      int    `json:"total"`      // partitions of the ring (its scheme's)
	Scheme     int    `json:"scheme"`     // the ring scheme the cluster routes by: the oldest its members know
}

// NodeCounters are the node's counters since it started (docs/protocol.md §9).
type NodeCounters struct {
	Messages   uint64 `json:"messages"`   // shard_chat_messages_total, every kind
	Deliveries uint64 `json:"deliveries"` // shard_deliveries_total
	Peer       uint64 `json:"peer"`       // shard_peer_messages_sent_total, every kind
}

// NodeLink is a node's side of its links with one peer.
type NodeLink struct {
	Peer string `json:"peer"`
	// State is of the node's own connection to the peer, which carries its
	// requests: "up", "connecting" or "down" (none now; the next request
	// dials).
	State string `json:"state"`
	// Accepted: the peer's connection to this node is open.
	Accepted bool `json:"accepted"`
	// Queued is the frames waiting in this node to go to the peer.
	Queued int `json:"queued"`
}

// ClusterLive is the answer of GET /api/cluster/live (docs/protocol.md
// §8.8): every member the answering node knows, with the figures each alive
// one gave about itself, and rates since the answering node last asked.
type ClusterLive struct {
	Self    string       `json:"self"`
	Time    int64        `json:"time"` // Unix milliseconds, the answering node's clock
	Members []LiveMember `json:"members"`
}

// LiveMember is one member in ClusterLive.
type LiveMember struct {
	Name  string `json:"name"`
	HTTP  string `json:"http"`
	State string `json:"state"` // as in /api/cluster: alive, suspect, dead or left
	// Node is the member's own figures; nil for a member that is not alive,
	// or did not answer (then Error says why).
	Node  *NodeFigures `json:"node,omitempty"`
	Error string       `json:"error,omitempty"`
	// Rates are per second, over the time between the member's previous
	// figures and these; nil until there are two of the same incarnation.
	Rates *NodeRates `json:"rates,omitempty"`
}

// NodeRates are NodeCounters turned into rates per second.
type NodeRates struct {
	Messages   float64 `json:"messages"`
	Deliveries float64 `json:"deliveries"`
	Peer       float64 `json:"peer"`
}
