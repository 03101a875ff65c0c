package protocol

// ClusterInfo is the answer of GET /api/cluster (docs/protocol.md §8.3).
// The node writes it; bench, the tests and operators' tools read it.
type ClusterInfo struct {
	Self    string          `json:"self"`    // the answering node's name
	Members []ClusterMember `json:"members"` // every member it knows of, itself included
	Ring    RingInfo        `json:"ring"`
	Routing string          `json:"routing"` // "owner" or "broadcast": the node's --routing
	Store   string          `json:"store"`   // "none", "embedded" or "postgres" (docs/protocol.md §7.1)
	// StoreState is, with a store, "ok" or "down": whether it takes writes
	// now, as its last write or probe (every second) found; StoreError
	// says why it is down (docs/protocol.md §8.3).
	StoreState string `json:"store_state,omitempty"`
	StoreError string `json:"store_error,omitempty"`
}

// ClusterMember is one member as the answering node sees it.
type ClusterMember struct {
	Name  string `json:"name"`
	HTTP  string `json:"http"`  // its client listener, host:port
	State string `json:"state"` // alive, suspect, dead or left
}

// GroupMember is one member of a group, in the answer of a group_members
// frame and of GET /api/groups/{group}.
type GroupMember struct {
	User  string `json:"user"`
	Admin bool   `json:"admin"`
	Since int64  `json:"since"` // when it was added, ms since the epoch
}

// RingInfo is the ring the answering node routes by.
type RingInfo struct {
	Members int    `json:"members"` // members in the ring
	Version string `json:"version"` // opaque: equal on nodes that agree on the ring
	// Scheme is the ring scheme the cluster routes by, the oldest its members
	// know; 0 from builds before schemes, which route by 1.
	Scheme int `json:"scheme,omitempty"`
}
