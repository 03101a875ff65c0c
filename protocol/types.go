package protocol

// Frame types a client sends (docs/protocol.md §3).
const (
	TypeSend    = "send"    // a message to a user (to), a joined room (room) or a group (group)
	TypeJoin    = "join"    // this connection joins a room, with a replay if since is given
	TypeLeave   = "leave"   // this connection leaves a room
	TypePing    = "ping"    // application-level keepalive: browsers cannot send ping frames
	TypeSync    = "sync"    // a page of the sender's inbox, or of a group's stream, after an offset
	TypeTyping  = "typing"  // the sender is typing to a user, a room or a group; the server sends it on, with from
	TypeWatch   = "watch"   // tell this connection of these users' presence, now and at every change
	TypeUnwatch = "unwatch" // stop telling it
)

// Frame types of groups and read state (docs/protocol.md §12).
const (
	TypeGroupCreate   = "group_create"  // creates a group; the sender is its first admin
	TypeGroupAdd      = "group_add"     // an admin adds a member
	TypeGroupRemove   = "group_remove"  // an admin removes a member
	TypeGroupLeave    = "group_leave"   // the sender leaves a group
	TypeRead          = "read"          // the sender has read a conversation up to an offset
	TypeConversations = "conversations" // the sender's conversations, newest activity first
)

// Frame types the server sends (docs/protocol.md §4).
const (
	TypeWelcome  = "welcome"  // the first frame of every connection
	TypeMsg      = "msg"      // a chat message, direct or room
	TypeAck      = "ack"      // a request accepted; the HTTP API's send answers with one too
	TypePong     = "pong"     // the answer to a ping
	TypeError    = "error"    // a request refused, with a code
	TypeReceipt  = "receipt"  // someone read a conversation up to an offset
	TypePresence = "presence" // a watched user's presence: at once after a watch, then at every change
)

// Group events: a `msg` with `event` records a membership change in the
// group's stream.
const (
	EventCreated = "created" // from created the group
	EventAdded   = "added"   // from, an admin, added user
	EventRemoved = "removed" // from, an admin, removed user
	EventLeft    = "left"    // from left; admin names who became admin, if anyone did
)

// Ack statuses.
const (
	StatusDelivered = "delivered" // direct: at least one connection of the recipient got it
	StatusOffline   = "offline"   // direct: the recipient has no connection anywhere
	StatusSent      = "sent"      // room or group: written to `recipients` connections
	StatusOK        = "ok"        // join or leave recorded by the room's owner; a sync page
	StatusStored    = "stored"    // direct, with a store: no connection got it now; it waits in the inbox
)

// Error codes, in error frames and in the JSON body of an HTTP error.
const (
	CodeBadRequest       = "bad_request"          // invalid JSON or UTF-8, unknown type, missing or malformed field
	CodeNotMember        = "not_member"           // send to a room this connection has not joined, or to a group the user is not a member of
	CodeConflict         = "conflict"             // group_create of a group that exists
	CodeRateLimited      = "rate_limited"         // over the frame rate; the frame was not processed
	CodeUnavailable      = "unavailable"          // the cluster cannot do it right now: retry later
	CodeUnauthorized     = "unauthorized"         // HTTP only: a refused upgrade (missing or bad token), a wrong API key
	CodeNotFound         = "not_found"            // HTTP only: no such page, or an endpoint this node has switched off
	CodeForbidden        = "forbidden"            // an admin's action by a non-admin; HTTP: an upgrade from an origin --origins does not allow
	CodeMethodNotAllowed = "method_not_allowed"   // HTTP only: an API endpoint asked with the wrong method
	CodeTooManyConns     = "too_many_connections" // HTTP only: a refused upgrade, past --max-conns-per-user or --max-conns-per-ip
)
