package router

import (
	"errors"

	"github.com/shardchat/shard/protocol"
)

// A forward carries frames another node encoded for this node's clients,
// and they are written to client sockets as they are. So each is checked
// first: it must be a well-formed server frame (protocol.ServerFrameType: a
// scan, not a decode) of a type a forward may carry. Whatever a peer sends,
// a client gets only frames it can parse. A kind of traffic that travels
// in forwards registers its frame type in its own file (carryFrames).

// errNotCarried refuses a forward whose frame is not one a client may get.
var errNotCarried = errors.New("forwarded frame is not a well-formed server frame of a forwarded type")

// carriedTypes are the server frame types a forward may carry; set at init.
var carriedTypes = map[string]bool{}

// carryFrames lets forwards carry frames of the given server types.
func carryFrames(types ...string) {
	for _, t := range types {
		carriedTypes[t] = true
	}
}

func init() { carryFrames(protocol.TypeMsg) }

// carried says whether a forward may hand frame to clients.
func carried(frame []byte) bool {
	typ, ok := protocol.ServerFrameType(frame)
	return ok && carriedTypes[typ]
}
