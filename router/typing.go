package router

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/shardchat/shard/protocol"
)

func init() {
	handleFrames((*Router).handleTyping, protocol.TypeTyping)
	carryFrames(protocol.TypeTyping)
}

// Typing (docs/protocol.md §3.7) is an event, not a message: it takes a message's road to
// its recipients (one forward per node that holds one) as an ephemeral
// delivery, never stored and not counted as a `msg` delivery, and at most
// one per conversation every typingInterval from one connection goes at all.

// typingInterval is docs/protocol.md §3.7's: a connection's typing frames for one
// conversation are forwarded at most once per 2 s; the others are dropped
// without an error. A page sends one every few seconds while its user types.
const typingInterval = 2 * time.Second

// maxTypingConversations bounds the conversations whose last forwarded
// typing one connection remembers: more than anyone types in at once within
// typingInterval. Past it, typing to yet another conversation is dropped
// until an older one has been quiet for typingInterval.
const maxTypingConversations = 64

// typingLimiter is when one connection's typing was last forwarded, per
// conversation; guarded by the client's lock.
type typingLimiter map[typingConversation]time.Time

type typingConversation struct {
	kind byte // 'u' a user, 'r' a room, 'g' a group
	name string
}

var (
	errTypingNotMember = &refused{protocol.CodeNotMember, "join the room before typing in it"}
	errTypingNoGroup   = &refused{protocol.CodeNotMember, "not a member of this group"}
)

// typingState is where a connection keeps its typingLimiter.
var typingState = newStateKey()

// allowTyping reports whether a typing frame to conv may be forwarded now,
// and if so counts it as the conversation's last.
func (c *client) allowTyping(conv typingConversation, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	last := c.stateLocked(typingState, func() any { return typingLimiter{} }).(typingLimiter)
	if t, ok := last[conv]; ok && now.Sub(t) < typingInterval {
		return false
	}
	if len(last) >= maxTypingConversations {
		for k, t := range last {
			if now.Sub(t) >= typingInterval {
				delete(last, k)
			}
		}
		if len(last) >= maxTypingConversations {
			return false
		}
	}
	conv.name = strings.Clone(conv.name) // not the frame's, which would keep its payload alive
	last[conv] = now
	return true
}

// handleTyping forwards a typing frame to the recipient's connections (not
// to the sender's other ones: they are not the recipient), or to a room's or
// a group's members as its messages go, but the sending connection. With an
// id it is answered ok, also when it was dropped; without one it is owed no
// answer.
func (r *Router) handleTyping(c *client, f *protocol.Frame, answer func(result)) {
	ok := result{status: protocol.StatusOK, silent: f.ID == ""}
	var conv typingConversation
	d := &delivery{skip: c, ephemeral: true}
	switch {
	case f.Group != "":
		members, err := r.typingGroup(c, f.Group)
		if err != nil {
			answer(result{err: err})
			return
		}
		conv, d.users = typingConversation{'g', f.Group}, members
	case f.Room != "":
		if !c.joined(f.Room) {
			answer(result{err: errTypingNotMember})
			return
		}
		conv, d.target = typingConversation{'r', f.Room}, Key{Room: true, Name: f.Room}
	default:
		conv, d.target = typingConversation{'u', f.To}, Key{Name: f.To}
	}
	if !c.allowTyping(conv, time.Now()) {
		r.m.Typing.WithLabelValues("dropped").Inc()
		answer(ok)
		return
	}
	r.m.Typing.WithLabelValues("forwarded").Inc()
	ev := protocol.Typing{From: c.User(), To: f.To, Room: f.Room, Group: f.Group}
	d.frame = protocol.AppendTyping(make([]byte, 0, 48+len(ev.From)+len(f.To)+len(f.Room)+len(f.Group)), &ev)
	r.deliver(d, func(res result) {
		if res.err != nil && res.err != errRecipientMoving {
			answer(result{err: res.err}) // it could not be routed: unavailable
			return
		}
		answer(ok)
	})
}

// typingGroup returns the members of group, the sender among them: the
// newest list this node keeps (groups.go), of any version, read within
// CacheTTL, as a cached location is trusted; a page types at every
// keystroke, and asking the group's owner each time would cost the owner a
// store read of the whole list. A list that lacks the sender (none kept, or
// one from before the sender was added) is asked for as the group stands
// now; a sender who is not a member then is refused.
func (r *Router) typingGroup(c *client, group string) ([]string, error) {
	if r.cfg.Store == nil {
		return nil, errNeedsStore
	}
	if members, ok := r.members.newest(group, time.Now().Add(-r.cfg.CacheTTL)); ok && slices.Contains(members, c.User()) {
		return members, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	members, err := r.membersAt(ctx, group, 0)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(members, c.User()) {
		return nil, errTypingNoGroup
	}
	return members, nil
}
