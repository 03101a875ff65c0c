package router

import (
	"errors"

	"github.com/shardchat/shard/protocol"
)

// A forward carries frames another node encoded for this node's clients,
// and they are written to client sockets as they are. So each is checked
// first: it must be a well-formed server frame (protocol.ServerFrameType: a
// scan, not a decode) of a type a forward may carry. Whatever a peer sends,
// a client gets only frames it can parse. A new kind of traffic that
// travels in forwards (typing, presence, receipts) adds its type here.

// errNotCarried refuses a forward whose frame is not one a client may get.
var errNotCarried = errors.New("forwarded frame is not a well-formed server frame of a forwarded type")

// carried says whether a forward may hand frame to clients.
func carried(frame []byte) bool {
	typ, ok := protocol.ServerFrameType(frame)
	if !ok {
		return false
	}
	switch typ {
	case protocol.TypeMsg, protocol.TypeReceipt:
		return true
	}
	return false
}
