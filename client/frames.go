package client

import (
	"fmt"
	"net/http"
	"time"

	"github.com/shardchat/shard/protocol"
)

// StatusPong is not an ack status (docs/protocol.md §4.6): it is the client's
// name for the answer to a ping (the pong frame's type), so that pings are
// answered like any request. Frame types, the other statuses and error codes
// are the protocol package's.
const StatusPong = protocol.TypePong

// Frame is one outgoing client frame. ID is filled in ("c1", "c2", ...) when
// empty; a given one must be a valid id (see ValidID) not already awaiting an
// answer on the connection.
type Frame struct {
	Type  string `json:"type"`
	ID    string `json:"id,omitempty"`
	To    string `json:"to,omitempty"`
	Room  string `json:"room,omitempty"`
	Group string `json:"group,omitempty"`
	User  string `json:"user,omitempty"` // group_add, group_remove
	With  string `json:"with,omitempty"` // read of a direct conversation
	Body  string `json:"body,omitempty"`
	// Members are group_create's members besides the sender.
	Members []string `json:"members,omitempty"`
	// Seq is a read's offset.
	Seq int64 `json:"seq,omitempty"`
	// Key is a send's idempotency key: a resend with the same key within 5
	// minutes is answered like the first and stored once (with a store).
	// Send, SendRoom and SendAsync set a random one when it is empty.
	Key string `json:"key,omitempty"`
	// After is a sync's offset: the page starts after it.
	After int64 `json:"after,omitempty"`
	// Since, on a join, asks for the room's messages after that offset
	// before live ones.
	Since *int64 `json:"since,omitempty"`
	// Users are the users of a watch or unwatch.
	Users []string `json:"users,omitempty"`
}

// Welcome is the first frame of every connection: the user the server took
// this connection for, and the node (its --name) that holds it.
type Welcome struct {
	User string `json:"user"`
	Node string `json:"node"`
	// Store: the node keeps messages. A send resent with its key is then
	// answered like the first attempt and stored once, which lets Send and
	// SendRoom resend one whose connection ended before its answer.
	Store bool `json:"store"`
	// MaxFrame is the node's --max-frame: a larger frame would close the
	// connection (1009), so the client refuses it with ErrFrameTooLarge
	// instead. 0 from a node that does not say.
	MaxFrame int `json:"max_frame"`
}

// Msg is one chat message received: a direct message (To set), a room
// message (Room set) or a group's (Group set). A group's membership change
// is a Msg too, with Event (created, added, removed, left) instead of Body,
// User the member it names and Admin who became admin when the last left.
type Msg struct {
	Mid   string `json:"mid"` // unique across the cluster
	From  string `json:"from"`
	To    string `json:"to,omitempty"`
	Room  string `json:"room,omitempty"`
	Group string `json:"group,omitempty"`
	Body  string `json:"body"`
	Event string `json:"event,omitempty"`
	User  string `json:"user,omitempty"`
	Admin string `json:"admin,omitempty"`
	TS    int64  `json:"ts"` // milliseconds since the epoch, stamped by the sender's node
	Seq   int64  `json:"seq,omitempty"`
	// Received is when this client read the frame off the socket (local clock).
	Received time.Time `json:"-"`
}

// Presence is a watched user's state (docs/protocol.md §4.9): online while it has a
// connection on any node. Offline comes once it has had none for 3 s.
type Presence struct {
	User   string `json:"user"`
	Online bool   `json:"online"`
	// LastSeen is when its last connection closed, in milliseconds since
	// the epoch; 0 while online, or when the cluster does not know.
	LastSeen int64 `json:"last_seen"`
	// Received is when this client read the frame off the socket (local clock).
	Received time.Time `json:"-"`
}

// Typing is someone typing to this user (To), or in a room or a group this
// connection is in.
type Typing struct {
	From  string `json:"from"`
	To    string `json:"to,omitempty"`
	Room  string `json:"room,omitempty"`
	Group string `json:"group,omitempty"`
	// Received is when this client read the frame off the socket (local clock).
	Received time.Time `json:"-"`
}

// Ack is the server's acceptance of a request. Status is one of the Status
// constants; Recipients is set for room sends (0 included).
type Ack struct {
	ID         string
	Status     string
	Recipients int
	// Seq is, with a store, the message's offset: in the recipient's inbox
	// (direct) or in the room's stream.
	Seq int64
	// SenderSeq is, on a direct send with a store, the offset of this
	// user's own copy in its inbox: what the recipient's Receipt names.
	SenderSeq int64
	// Last and More answer a sync: the newest offset of the inbox, and
	// whether messages remain after this page.
	Last int64
	More bool
	// Conversations answers Conversations.
	Conversations []Conversation
	// Members answers GroupMembers.
	Members []GroupMember
}

// GroupMember is one member of a group: its user id, whether it is an
// admin, and when it was added (ms since the epoch).
type GroupMember = protocol.GroupMember

// Conversation is one of this user's conversations: exactly one of With (a
// direct one) and Group is set.
type Conversation struct {
	With   string `json:"with,omitempty"`
	Group  string `json:"group,omitempty"`
	Last   int64  `json:"last"`   // the newest offset in it
	Read   int64  `json:"read"`   // this user's read offset
	Unread int64  `json:"unread"` // messages and events of others after Read
	TS     int64  `json:"ts"`     // when its newest message was sent
	// PeerRead, direct: how far the peer has read this user's messages,
	// an offset in this user's inbox (the newest receipt it sent).
	PeerRead int64 `json:"peer_read,omitempty"`
	Admin    bool  `json:"admin"` // a group this user is an admin of
}

// Receipt says By has read a conversation up to Seq: a direct one (With is
// the conversation as this user names it: By, when By read what this user
// sent; the peer, when this user read on another device) or Group.
type Receipt struct {
	By, With, Group string
	Seq             int64
}

// Error is an error frame: the server refused the request with ID.
type Error struct {
	ID      string
	Code    string // one of the Code constants
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// HandshakeError is a refused upgrade: the server answered the WebSocket
// request with an HTTP error (docs/protocol.md §2.5) instead of switching
// protocols.
type HandshakeError struct {
	Status  int    // HTTP status: 400, 401, 503, ...
	Code    string // the error code from the JSON body; empty if the body had none
	Message string // the message from the JSON body
}

func (e *HandshakeError) Error() string {
	s := fmt.Sprintf("client: upgrade refused: %d %s", e.Status, http.StatusText(e.Status))
	if e.Code != "" {
		s += ": " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// ValidID reports whether s is a well-formed user id, room name or frame id:
// 1 to 64 characters of A-Z a-z 0-9 _ . @ - (docs/protocol.md §2.2).
func ValidID(s string) bool { return protocol.ValidID(s) }

// inbound is any server frame; Type says which fields mean something.
type inbound struct {
	Type       string `json:"type"`
	ID         string `json:"id"`
	Mid        string `json:"mid"`
	From       string `json:"from"`
	To         string `json:"to"`
	Room       string `json:"room"`
	Group      string `json:"group"`
	Online     bool   `json:"online"`
	LastSeen   int64  `json:"last_seen"`
	Body       string `json:"body"`
	Event      string `json:"event"`
	User       string `json:"user"`
	Admin      string `json:"admin"`
	By         string `json:"by"`
	With       string `json:"with"`
	TS         int64  `json:"ts"`
	Seq        int64  `json:"seq"`
	SenderSeq  int64  `json:"sender_seq"`
	Status     string `json:"status"`
	Recipients int    `json:"recipients"`
	Last       int64  `json:"last"`
	More       bool   `json:"more"`
	Code       string `json:"code"`
	Message    string `json:"message"`

	Conversations []Conversation `json:"conversations"`
	Members       []GroupMember  `json:"members"`
}
