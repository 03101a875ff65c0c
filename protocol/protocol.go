// Package protocol holds what both ends of a client connection must agree on
// byte for byte: frame types, statuses, error codes and the syntax of ids.
// It imports nothing and does nothing else.
package protocol

// Frame types a client sends (SPEC section 4, and sync from the history
// additions).
const (
	TypeSend  = "send"
	TypeJoin  = "join"
	TypeLeave = "leave"
	TypePing  = "ping"
	TypeSync  = "sync"
)

// Ack statuses.
const (
	StatusDelivered = "delivered" // direct: at least one connection of the recipient got it
	StatusOffline   = "offline"   // direct: the recipient has no connection anywhere
	StatusSent      = "sent"      // room: written to `recipients` connections
	StatusOK        = "ok"        // join or leave recorded by the room's owner; a sync page
	StatusStored    = "stored"    // direct, with a store: no connection got it now; it waits in the inbox
)

// Error codes.
const (
	CodeBadRequest   = "bad_request"  // invalid JSON or UTF-8, unknown type, missing or malformed field
	CodeNotMember    = "not_member"   // send to a room this connection has not joined
	CodeRateLimited  = "rate_limited" // over the frame rate; the frame was not processed
	CodeUnavailable  = "unavailable"  // the cluster cannot do it right now: retry later
	CodeUnauthorized = "unauthorized" // a refused upgrade: missing or bad token
)

// MaxIDLen bounds user ids, room names and client frame ids (SPEC section 3).
const MaxIDLen = 64

// ValidID reports whether s is a well-formed user id, room name or frame id:
// 1 to 64 characters of A-Z a-z 0-9 _ . @ -.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '_', c == '.', c == '@', c == '-':
		default:
			return false
		}
	}
	return true
}

// MaxOffset bounds stream offsets (seq, after, since) to what a JavaScript
// number holds exactly.
const MaxOffset = 1<<53 - 1

// ParseOffset reads an offset written as decimal digits only (no sign,
// fraction or exponent), at most MaxOffset.
func ParseOffset(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' || n > (MaxOffset-int64(c-'0'))/10 {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}
