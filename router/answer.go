package router

import (
	"errors"
	"strings"

	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/store"
)

// result is the outcome of routing one message, or of a join or leave.
type result struct {
	status     string // an ack status, or "" with err set
	recipients int
	err        error
	seq        int64  // with a store: the message's offset
	senderSeq  int64  // a direct send with a store: the offset of the sender's copy
	mid        string // a send's message id, so that a client matches its own copies
	page       bool   // a sync page: last and more are set
	last       int64
	more       bool
	// conversations answers a conversations frame.
	conversations []protocol.Conversation
	silent        bool // no answer is owed: a typing frame without id
	// members answers a group_members frame.
	members []protocol.GroupMember
}

// refused is an error the client is answered with as it is: a code and a
// message for people, so that a capability's own refusals need no case in
// refusal.
type refused struct{ code, message string }

func (e *refused) Error() string { return e.message }

var (
	errNotMember = errors.New("join the room before sending to it")
	errNoStore   = errors.New("this cluster keeps no history: it runs without a message store")
	// errNeedsStore: groups and read state live in the store (SPEC 8).
	errNeedsStore = errors.New("groups and read state need a message store; this cluster runs without one")
	// errNotAttached: a frame from a connection the router does not hold
	// (its registration failed, or it has closed).
	errNotAttached = errors.New("connection is not registered")
)

// refusal is how an error reaches a client: a code and a message. Any
// error not listed is `unavailable`: the cluster could not do it now.
func refusal(err error) (code, message string) {
	var rf *refused
	switch {
	case errors.As(err, &rf):
		return rf.code, rf.message
	case err == errNotMember:
		return protocol.CodeNotMember, err.Error()
	case err == errStoreQuota:
		return protocol.CodeRateLimited, err.Error()
	case err == errNoStore:
		return protocol.CodeUnavailable, err.Error()
	case err == errNeedsStore, err == ErrTooManyRooms:
		return protocol.CodeBadRequest, err.Error()
	case errors.Is(err, store.ErrNotMember), errors.Is(err, store.ErrNoGroup):
		// A group one cannot see is one one is not a member of.
		return protocol.CodeNotMember, "not a member of this group"
	case errors.Is(err, store.ErrForbidden):
		return protocol.CodeForbidden, "only an admin of the group may do that"
	case errors.Is(err, store.ErrConflict):
		return protocol.CodeConflict, "a group of that name exists"
	case errors.Is(err, store.ErrTooMany):
		return protocol.CodeBadRequest, storeText(err, store.ErrTooMany)
	case errors.Is(err, store.ErrInvalid):
		return protocol.CodeBadRequest, storeText(err, store.ErrInvalid)
	case errors.Is(err, store.ErrFull):
		return protocol.CodeUnavailable, "the message store's disk is full: nothing was stored; retry later"
	case errors.Is(err, store.ErrUnavailable):
		return protocol.CodeUnavailable, "the message store is unreachable; retry later"
	}
	return protocol.CodeUnavailable, "the cluster cannot route this right now; retry later"
}

// storeText is what the store said of a refusal, without its sentinel:
// `add member "team": 1001 members, at most 1000`.
func storeText(err, sentinel error) string {
	return strings.TrimSuffix(strings.TrimPrefix(err.Error(), "store: "), ": "+sentinel.Error())
}

// ackRoom is what an ack frame takes but for its id and mid:
// {"type":"ack","id":"","status":"delivered","seq":…,"mid":""} and a little.
const ackRoom = 96

func (r *Router) answer(c Conn, id, typ string, res result) {
	var frame []byte
	if res.silent {
		c.Answer(nil)
		return
	}
	if res.err != nil {
		code, message := refusal(res.err)
		if code == protocol.CodeUnavailable {
			r.log.Debug("answered unavailable", "user", c.User(), "conn", c.ID(), "type", typ, "err", res.err)
		}
		r.m.answers.with(code).Inc()
		c.Answer(protocol.AppendError(nil, id, code, message))
		return
	}
	r.m.answers.with(res.status).Inc()
	n := -1
	if res.status == protocol.StatusSent {
		n = res.recipients
	}
	// Room for a message's ack at once: growing from nil took three
	// allocations per message.
	frame = make([]byte, 0, ackRoom+len(id)+len(res.mid))
	frame = protocol.AppendAckFrame(frame, &protocol.Ack{ID: id, Status: res.status, Recipients: n,
		Seq: res.seq, SenderSeq: res.senderSeq, Mid: res.mid, Page: res.page, Last: res.last, More: res.more, Conversations: res.conversations, Members: res.members})
	c.Answer(frame)
}
