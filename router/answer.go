package router

import (
	"errors"

	"github.com/shardchat/shard/protocol"
)

// result is the outcome of routing one message, or of a join or leave.
type result struct {
	status     string // an ack status, or "" with err set
	recipients int
	err        error
	seq        int64  // with a store: the message's offset
	mid        string // a send's message id, so that a client matches its own copies
	page       bool   // a sync page: last and more are set
	last       int64
	more       bool
	silent     bool // no answer is owed: a typing frame without id
}

// A refusal is an error the client is answered with as it is: a SPEC code
// and a message for people.
type refusal struct{ code, message string }

func (e *refusal) Error() string { return e.message }

var (
	errNotMember = errors.New("not a member")
	errNoStore   = errors.New("this cluster keeps no history: it runs without a message store")
	// errNotAttached: a frame from a connection the router does not hold
	// (its registration failed, or it has closed).
	errNotAttached = errors.New("connection is not registered")
)

func (r *Router) answer(c Conn, id, typ string, res result) {
	var frame []byte
	var ref *refusal
	switch {
	case res.silent:
		c.Answer(nil)
		return
	case errors.As(res.err, &ref):
		r.m.answerStatus.WithLabelValues(ref.code).Inc()
		frame = protocol.AppendError(nil, id, ref.code, ref.message)
	case res.err == errNotMember:
		r.m.answerStatus.WithLabelValues(protocol.CodeNotMember).Inc()
		frame = protocol.AppendError(nil, id, protocol.CodeNotMember, "join the room before sending to it")
	case res.err == errNoStore:
		r.m.answerStatus.WithLabelValues(protocol.CodeUnavailable).Inc()
		frame = protocol.AppendError(nil, id, protocol.CodeUnavailable, res.err.Error())
	case res.err == ErrTooManyRooms:
		r.m.answerStatus.WithLabelValues(protocol.CodeBadRequest).Inc()
		frame = protocol.AppendError(nil, id, protocol.CodeBadRequest, res.err.Error())
	case res.err != nil:
		r.m.answerStatus.WithLabelValues(protocol.CodeUnavailable).Inc()
		r.log.Debug("answered unavailable", "user", c.User(), "conn", c.ID(), "type", typ, "err", res.err)
		frame = protocol.AppendError(nil, id, protocol.CodeUnavailable, "the cluster cannot route this right now; retry later")
	default:
		r.m.answerStatus.WithLabelValues(res.status).Inc()
		n := -1
		if res.status == protocol.StatusSent {
			n = res.recipients
		}
		frame = protocol.AppendAckFrame(nil, &protocol.Ack{ID: id, Status: res.status, Recipients: n,
			Seq: res.seq, Mid: res.mid, Page: res.page, Last: res.last, More: res.more})
	}
	c.Answer(frame)
}
