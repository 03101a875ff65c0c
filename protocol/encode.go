package protocol

import (
	"strconv"
	"unicode/utf8"
)

// Msg is a chat message as every recipient sees it. Exactly one of To,
// Room and Group is set.
type Msg struct {
	Mid   string
	From  string
	To    string
	Room  string
	Group string
	Body  string
	TS    int64 // milliseconds since the epoch, stamped by the sender's node
	Seq   int64 // offset in the stream the recipient reads it from; 0 without a store
	// Event marks a group's membership change (EventAdded, ...), which has
	// no body; User is the member it names, Admin (EventLeft) who became
	// admin because the last admin left.
	Event, User, Admin string
}

// AppendMsg appends the `msg` frame for m to b. A message is encoded once
// and the same bytes are queued to every recipient.
func AppendMsg(b []byte, m *Msg) []byte {
	b = append(b, `{"type":"`+TypeMsg+`","mid":`...)
	b = appendString(b, m.Mid)
	b = append(b, `,"from":`...)
	b = appendString(b, m.From)
	switch {
	case m.Room != "":
		b = append(b, `,"room":`...)
		b = appendString(b, m.Room)
	case m.Group != "":
		b = append(b, `,"group":`...)
		b = appendString(b, m.Group)
	default:
		b = append(b, `,"to":`...)
		b = appendString(b, m.To)
	}
	if m.Event != "" {
		b = append(b, `,"event":`...)
		b = appendString(b, m.Event)
		if m.User != "" {
			b = append(b, `,"user":`...)
			b = appendString(b, m.User)
		}
		if m.Admin != "" {
			b = append(b, `,"admin":`...)
			b = appendString(b, m.Admin)
		}
	} else {
		b = append(b, `,"body":`...)
		b = appendString(b, m.Body)
	}
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, m.TS, 10)
	if m.Seq > 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendInt(b, m.Seq, 10)
	}
	return append(b, '}')
}

// Typing is a typing event as its recipients see it: From is typing to
// exactly one of To (a user), Room and Group.
type Typing struct {
	From, To, Room, Group string
}

// AppendTyping appends the `typing` frame for t. Like a message, it is
// encoded once and the same bytes go to every recipient.
func AppendTyping(b []byte, t *Typing) []byte {
	b = append(b, `{"type":"`+TypeTyping+`","from":`...)
	b = appendString(b, t.From)
	switch {
	case t.Room != "":
		b = append(b, `,"room":`...)
		b = appendString(b, t.Room)
	case t.Group != "":
		b = append(b, `,"group":`...)
		b = appendString(b, t.Group)
	default:
		b = append(b, `,"to":`...)
		b = appendString(b, t.To)
	}
	return append(b, '}')
}

// Presence is a watched user's state: online while it has a connection on
// any node; LastSeen is when its last connection closed (milliseconds since
// the epoch), 0 while online or when not known.
type Presence struct {
	User     string
	Online   bool
	LastSeen int64
}

// AppendPresence appends the `presence` frame for p, encoded once for all
// the watchers of a node.
func AppendPresence(b []byte, p *Presence) []byte {
	b = append(b, `{"type":"`+TypePresence+`","user":`...)
	b = appendString(b, p.User)
	b = append(b, `,"online":`...)
	b = strconv.AppendBool(b, p.Online)
	b = append(b, `,"last_seen":`...)
	b = strconv.AppendInt(b, p.LastSeen, 10)
	return append(b, '}')
}

// Welcome is the first frame of every connection.
type Welcome struct {
	User, Node string
	// Store says the node keeps messages, so that a send resent with its
	// key is stored once.
	Store bool
	// MaxFrame is the node's --max-frame, so that a client can refuse a
	// frame the node would close the connection for (1009) before sending it.
	MaxFrame int
}

// AppendWelcome appends w as a welcome frame.
func AppendWelcome(b []byte, w *Welcome) []byte {
	b = append(b, `{"type":"`+TypeWelcome+`","user":`...)
	b = appendString(b, w.User)
	b = append(b, `,"node":`...)
	b = appendString(b, w.Node)
	b = append(b, `,"store":`...)
	b = strconv.AppendBool(b, w.Store)
	b = append(b, `,"max_frame":`...)
	b = strconv.AppendInt(b, int64(w.MaxFrame), 10)
	return append(b, '}')
}

// Ack is an answer that accepts a frame.
type Ack struct {
	ID         string
	Status     string
	Recipients int    // room sends; < 0 leaves it out, right for every status but `sent`
	Seq        int64  // with a store: the message's offset; 0 leaves it out
	SenderSeq  int64  // direct, with a store: the offset of the sender's copy in its inbox, which the peer's receipts name; 0 leaves it out
	Mid        string // a send's message id; empty leaves it out
	Last       int64  // sync: the newest offset of the stream
	More       bool   // sync: offsets after the page remain
	Page       bool   // sync: write last and more
	// Conversations answers a conversations frame (written, even empty,
	// when non-nil).
	Conversations []Conversation
	// Members answers a group_members frame (written when non-nil).
	Members []GroupMember
}

// Conversation is one entry of a conversations answer: exactly one of With
// and Group is set.
// Its JSON tags are the HTTP API's.
type Conversation struct {
	With   string `json:"with,omitempty"`
	Group  string `json:"group,omitempty"`
	Last   int64  `json:"last"`   // the newest offset in it: of the user's inbox (direct), of the group's stream
	Read   int64  `json:"read"`   // the user's read offset
	Unread int64  `json:"unread"` // messages and events of others after Read
	TS     int64  `json:"ts"`     // the time of the newest message
	// PeerRead, direct: how far the peer has read the user's messages,
	// an offset in the user's inbox (the newest receipt it sent).
	PeerRead int64 `json:"peer_read,omitempty"`
	Admin    bool  `json:"admin,omitempty"` // group: the user is an admin
}

// AppendAck appends an ack without optional fields but recipients, which
// recipients < 0 leaves out.
func AppendAck(b []byte, id, status string, recipients int) []byte {
	return AppendAckFrame(b, &Ack{ID: id, Status: status, Recipients: recipients})
}

// AppendAckFrame appends a.
func AppendAckFrame(b []byte, a *Ack) []byte {
	b = append(b, `{"type":"`+TypeAck+`"`...)
	b = appendID(b, a.ID)
	b = append(b, `,"status":`...)
	b = appendString(b, a.Status)
	if a.Recipients >= 0 {
		b = append(b, `,"recipients":`...)
		b = strconv.AppendInt(b, int64(a.Recipients), 10)
	}
	if a.Seq > 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendInt(b, a.Seq, 10)
	}
	if a.SenderSeq > 0 {
		b = append(b, `,"sender_seq":`...)
		b = strconv.AppendInt(b, a.SenderSeq, 10)
	}
	if a.Mid != "" {
		b = append(b, `,"mid":`...)
		b = appendString(b, a.Mid)
	}
	if a.Page {
		b = append(b, `,"last":`...)
		b = strconv.AppendInt(b, a.Last, 10)
		b = append(b, `,"more":`...)
		b = strconv.AppendBool(b, a.More)
	}
	if a.Conversations != nil {
		b = append(b, `,"conversations":[`...)
		for i := range a.Conversations {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendConversation(b, &a.Conversations[i])
		}
		b = append(b, ']')
	}
	if a.Members != nil {
		b = append(b, `,"members":[`...)
		for i := range a.Members {
			if i > 0 {
				b = append(b, ',')
			}
			m := &a.Members[i]
			b = append(b, `{"user":`...)
			b = appendString(b, m.User)
			b = append(b, `,"admin":`...)
			b = strconv.AppendBool(b, m.Admin)
			b = append(b, `,"since":`...)
			b = strconv.AppendInt(b, m.Since, 10)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

func appendConversation(b []byte, c *Conversation) []byte {
	if c.Group != "" {
		b = append(b, `{"group":`...)
		b = appendString(b, c.Group)
	} else {
		b = append(b, `{"with":`...)
		b = appendString(b, c.With)
	}
	b = append(b, `,"last":`...)
	b = strconv.AppendInt(b, c.Last, 10)
	b = append(b, `,"read":`...)
	b = strconv.AppendInt(b, c.Read, 10)
	b = append(b, `,"unread":`...)
	b = strconv.AppendInt(b, c.Unread, 10)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, c.TS, 10)
	if c.PeerRead > 0 {
		b = append(b, `,"peer_read":`...)
		b = strconv.AppendInt(b, c.PeerRead, 10)
	}
	if c.Admin { // absent otherwise, as in the HTTP API's JSON (omitempty)
		b = append(b, `,"admin":true`...)
	}
	return append(b, '}')
}

// Receipt says By has read a conversation up to Seq: exactly one of With
// (a direct conversation, named as its recipient sees it) and Group is set.
type Receipt struct {
	By, With, Group string
	Seq             int64
}

// AppendReceipt appends the `receipt` frame for r.
func AppendReceipt(b []byte, r *Receipt) []byte {
	b = append(b, `{"type":"`+TypeReceipt+`","by":`...)
	b = appendString(b, r.By)
	if r.Group != "" {
		b = append(b, `,"group":`...)
		b = appendString(b, r.Group)
	} else {
		b = append(b, `,"with":`...)
		b = appendString(b, r.With)
	}
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, r.Seq, 10)
	return append(b, '}')
}

// AppendPong appends the answer to an application-level ping.
func AppendPong(b []byte, id string) []byte {
	b = append(b, `{"type":"`+TypePong+`"`...)
	b = appendID(b, id)
	return append(b, '}')
}

// AppendError appends an error frame; id is left out when empty.
func AppendError(b []byte, id, code, message string) []byte {
	b = append(b, `{"type":"`+TypeError+`"`...)
	b = appendID(b, id)
	b = append(b, `,"code":`...)
	b = appendString(b, code)
	b = append(b, `,"message":`...)
	b = appendString(b, message)
	return append(b, '}')
}

func appendID(b []byte, id string) []byte {
	if id == "" {
		return b
	}
	b = append(b, `,"id":`...)
	return appendString(b, id)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. It escapes what JSON requires,
// plus <, > and & and U+2028/U+2029 so that a frame is safe to embed in a
// page, as encoding/json does.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == '\u2028' || r == '\u2029' || (r == utf8.RuneError && size == 1) {
			b = append(b, s[start:i]...)
			if r == utf8.RuneError {
				b = append(b, `\ufffd`...)
			} else {
				b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			}
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
