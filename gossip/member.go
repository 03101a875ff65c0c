package gossip

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"

	"github.com/hashicorp/memberlist"
)

// Meta is what a node announces about itself. It travels in memberlist's node metadata as a
// small versioned JSON record, e.g. {"v":1,"http":"127.0.0.1:8080","link":"127.0.0.1:7947"}.
type Meta struct {
	HTTP string `json:"http"` // client listener address (--http)
	Link string `json:"link"` // node-to-node data-plane address (--link)
	// Inc is the incarnation: random per process start, so that a node
	// restarted under the same name is not mistaken for its former self.
	Inc string `json:"inc"`
	// Ring is the newest ring scheme the node routes by (ring.Scheme); 0 when it does not
	// say, as builds before ring schemes. The cluster routes by the oldest of them.
	Ring int `json:"ring,omitempty"`
}

// State is a member's state as this node knows it.
type State string

const (
	// StateAlive: the member answers probes, or is suspected but not yet declared dead.
	// memberlist v0.7.0 offers no race-free way to see suspicion (its Node.State field is
	// never written, and reading its node table outside its lock races, issue #306), so a
	// suspect member is reported alive until it is declared dead or refutes.
	StateAlive State = "alive"
	// StateSuspect is part of the vocabulary of /api/cluster but not reported by this
	// package today; see StateAlive.
	StateSuspect State = "suspect"
	// StateDead: the member stopped answering and was declared failed.
	StateDead State = "dead"
	// StateLeft: the member said goodbye with Leave.
	StateLeft State = "left"
)

// Member is one node of the cluster as seen from here. It is a copy: holding it never races
// with memberlist.
type Member struct {
	Name  string // unique node name; the ring identifies members by it
	Addr  string // gossip host:port
	Meta  Meta
	State State
}

// metaVersion is the "v" of the record we write. A reader accepts any version and takes the
// fields it knows, so a newer node can add fields without breaking older ones.
const metaVersion = 1

// wireMeta is Meta as it travels. Leaving is this node's intent to leave, announced just
// before memberlist's Leave; memberlist itself does not tell a peer whether a member that
// disappeared left or failed (serf uses the same leave-intent idea).
type wireMeta struct {
	V       int    `json:"v"`
	HTTP    string `json:"http,omitempty"`
	Link    string `json:"link,omitempty"`
	Inc     string `json:"inc,omitempty"`
	Leaving bool   `json:"leaving,omitempty"`
	Ring    int    `json:"ring,omitempty"`
}

func encodeMeta(m Meta, leaving bool) ([]byte, error) {
	b, err := json.Marshal(wireMeta{V: metaVersion, HTTP: m.HTTP, Link: m.Link, Inc: m.Inc, Leaving: leaving, Ring: m.Ring})
	if err != nil {
		return nil, err
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("encoded meta is %d bytes, memberlist allows %d", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

// EncodeMeta is m as a member announces it, for a member that speaks memberlist without
// this package (internal/fakepeers' synthetic peers).
func EncodeMeta(m Meta) ([]byte, error) { return encodeMeta(m, false) }

// DecodeMeta reads a member's announced metadata; false when it cannot.
func DecodeMeta(b []byte) (Meta, bool) {
	m, _, ok := decodeMeta(b)
	return m, ok
}

// decodeMeta never fails: a member whose record we cannot read is still a member, only one
// whose addresses we do not know.
func decodeMeta(b []byte) (meta Meta, leaving bool, ok bool) {
	if len(b) == 0 {
		return Meta{}, false, false
	}
	var w wireMeta
	if err := json.Unmarshal(b, &w); err != nil {
		return Meta{}, false, false
	}
	return Meta{HTTP: w.HTTP, Link: w.Link, Inc: w.Inc, Ring: w.Ring}, w.Leaving, true
}

// nodeAddr formats a memberlist node's address. Call it only where reading n cannot race:
// inside a memberlist callback, or on a node memberlist built for us.
func nodeAddr(n *memberlist.Node) string {
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}
