package protocol

// Frame types a client sends (SPEC section 4, sync from the history
// additions, typing and watch from section 9).
const (
	TypeSend    = "send"    // a message to a user (to) or to a joined room (room)
	TypeJoin    = "join"    // this connection joins a room, with a replay if since is given
	TypeLeave   = "leave"   // this connection leaves a room
	TypePing    = "ping"    // application-level keepalive: browsers cannot send ping frames
	TypeSync    = "sync"    // a page of the sender's inbox after an offset
	TypeTyping  = "typing"  // the sender is typing to a user, a room or a group; the server sends it on, with from
	TypeWatch   = "watch"   // tell this connection of these users' presence, now and at every change
	TypeUnwatch = "unwatch" // stop telling it
)

// Frame types the server sends.
const (
	TypeWelcome  = "welcome"  // the first frame of every connection
	TypeMsg      = "msg"      // a chat message, direct or room
	TypeAck      = "ack"      // a request accepted; the HTTP API's send answers with one too
	TypePong     = "pong"     // the answer to a ping
	TypeError    = "error"    // a request refused, with a code
	TypePresence = "presence" // a watched user's presence: at once after a watch, then at every change
)

// Ack statuses.
const (
	StatusDelivered = "delivered" // direct: at least one connection of the recipient got it
	StatusOffline   = "offline"   // direct: the recipient has no connection anywhere
	StatusSent      = "sent"      // room: written to `recipients` connections
	StatusOK        = "ok"        // join or leave recorded by the room's owner; a sync page
	StatusStored    = "stored"    // direct, with a store: no connection got it now; it waits in the inbox
)

// Error codes, in error frames and in the JSON body of an HTTP error.
const (
	CodeBadRequest       = "bad_request"        // invalid JSON or UTF-8, unknown type, missing or malformed field
	CodeNotMember        = "not_member"         // send to a room this connection has not joined
	CodeRateLimited      = "rate_limited"       // over the frame rate; the frame was not processed
	CodeUnavailable      = "unavailable"        // the cluster cannot do it right now: retry later
	CodeUnauthorized     = "unauthorized"       // HTTP only: a refused upgrade (missing or bad token), a wrong API key
	CodeNotFound         = "not_found"          // HTTP only: no such page, or an endpoint this node has switched off
	CodeForbidden        = "forbidden"          // HTTP only: an upgrade from a page whose origin --origins does not allow
	CodeMethodNotAllowed = "method_not_allowed" // HTTP only: an API endpoint asked with the wrong method
)
