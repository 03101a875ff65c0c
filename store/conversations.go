package store

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
)

// ReadState is each user's place in each of its conversations: a direct
// one (with a peer; offsets in the user's own inbox) or a group (offsets
// in the group's stream).
//
// Rules (issue 12):
//   - A read offset only moves forward; a lower one changes nothing. It is
//     clamped to the newest offset of the conversation: one cannot have
//     read what is not there yet.
//   - Sending is reading: a user's message (and a membership event it
//     causes) moves its own read offset in that conversation to the
//     message, as Telegram and WhatsApp do (one has seen what one answers).
//     So a user's own messages and events are never after its read offset,
//     and unread counts only the messages and events of others after it.
//   - A direct read names a message of the user's inbox; the peer is told
//     where that is in the peer's own inbox (ReadMarked.PeerSeq), which
//     every stored direct message knows.
//   - Unread counts are kept as counters, not counted by a scan: per
//     direct conversation, the count of the peer's messages so far and
//     that count at the read offset; per group, the read offset against
//     the stream's newest (every entry after one's read offset is someone
//     else's, by the rule above). Retention keeps them right: a message it
//     removes is no longer unread (nor read: the read offset stays).
type ReadState interface {
	// SetRead moves r.User's read offset in one conversation forward to
	// r.Seq. A group needs r.User to be a member (ErrNotMember,
	// ErrNoGroup); a direct conversation with no message yet has nothing
	// to read (Moved false).
	SetRead(ctx context.Context, r ReadMark) (ReadMarked, error)
	// Conversations lists user's conversations, newest activity first:
	// the MaxDirectConversations direct ones with the newest messages (an
	// older one drops out of the list, and comes back with its next
	// message) and every group user belongs to (at most MaxUserGroups).
	// Its cost is one pass over the user's conversation records, never
	// over messages.
	Conversations(ctx context.Context, user string) ([]Conversation, error)
}

// ReadMark says that User has read a conversation, exactly one of With
// (direct) and Group, up to offset Seq.
type ReadMark struct {
	User, With, Group string
	Seq               int64 // in User's inbox (With) or the group's stream (Group)
}

// ReadMarked is the read state after a SetRead.
type ReadMarked struct {
	// Moved: the read offset moved (Seq was above it). When false nothing
	// changed, and no receipt is owed.
	Moved bool
	// Read is the read offset now.
	Read int64
	// PeerSeq, for a direct conversation, is the receipt the peer is owed:
	// the newest message of the conversation at or below Read, as its
	// offset in the peer's inbox (0 while there is none). It never goes
	// back.
	PeerSeq int64
	// Unread is the conversation's count of unread messages now.
	Unread int64
	// Version, for a group, is its membership version at the read: the
	// members its receipt goes to are those at that version, which a node
	// may have cached (see Appended.Version).
	Version int64
}

// Conversation is one entry of a user's conversation list: exactly one of
// With and Group is set.
type Conversation struct {
	With  string // a direct conversation: the peer
	Group string
	// Last is the newest offset of the conversation: of its newest message
	// in the user's inbox (direct), of the group's stream (group).
	Last int64
	// Read is the user's read offset; Unread the messages and events of
	// others after it.
	Read, Unread int64
	// TS is the time of the newest message (ms since the epoch).
	TS int64
	// PeerRead, for a direct conversation, is how far the peer has read
	// the user's messages, as an offset in the user's inbox: the newest
	// receipt the user was sent (ReadMarked.PeerSeq of the peer's read), so
	// that a client that was away shows its read ticks again. 0: none.
	PeerRead int64
	// Admin: the user is an admin of Group.
	Admin bool
}

// MaxDirectConversations bounds the direct conversations one
// Conversations lists: as many as groups (MaxUserGroups), and more than
// a conversation list on a screen is ever scrolled through.
const MaxDirectConversations = 1000

func (r *ReadMark) check() error {
	if (r.With == "") == (r.Group == "") {
		return fmt.Errorf("set read: want exactly one of with and group: %w", ErrInvalid)
	}
	if r.Seq < 0 {
		return fmt.Errorf("set read: offset %d: %w", r.Seq, ErrInvalid)
	}
	if err := checkUser("set read", r.User); err != nil {
		return err
	}
	if r.Group != "" {
		return checkGroupName("set read", r.Group)
	}
	return checkUser("set read", r.With)
}

// newestFirst sorts a conversation list: newest activity first, then
// direct before groups, each by name, so that equal times list the same
// way on every call.
func newestFirst(list []Conversation) {
	slices.SortFunc(list, func(a, b Conversation) int {
		return cmp.Or(cmp.Compare(b.TS, a.TS), strings.Compare(a.Group, b.Group), strings.Compare(a.With, b.With))
	})
}

// boundDirect keeps the MaxDirectConversations newest of a user's direct
// conversations, sorted newest first.
func boundDirect(direct []Conversation) []Conversation {
	newestFirst(direct)
	return direct[:min(len(direct), MaxDirectConversations)]
}

// groupUnread is the unread count of a group for a member: every entry
// after its read offset is another's (sending moves the read offset), but
// those retention removed (through) are no longer unread.
func groupUnread(last, read, through int64) int64 {
	return max(last-max(read, through), 0)
}

func (f *frontend) SetRead(ctx context.Context, r ReadMark) (ReadMarked, error) {
	if err := r.check(); err != nil {
		return ReadMarked{}, err
	}
	if err := f.acquire(); err != nil {
		return ReadMarked{}, err
	}
	defer f.mu.RUnlock()
	return f.e.setRead(ctx, r)
}

func (f *frontend) Conversations(ctx context.Context, user string) ([]Conversation, error) {
	if err := checkUser("conversations", user); err != nil {
		return nil, err
	}
	if err := f.acquire(); err != nil {
		return nil, err
	}
	defer f.mu.RUnlock()
	list, err := f.e.conversations(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("conversations of %s: %w", user, err)
	}
	newestFirst(list)
	return list, nil
}
