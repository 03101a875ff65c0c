package router

import (
	"strings"
	"time"

	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/session"
	"github.com/shardchat/shard/store"
)

// HandleFrame acts on a send, join or leave from a client connection. It
// runs in the connection's reader, so that its frames are routed in order;
// only a lookup at an owner (on a cache miss) or a join waits here.
func (r *Router) HandleFrame(c *session.Conn, f *protocol.Frame) {
	id, typ := f.ID, f.Type // f is reused by the reader once this returns
	answer := func(res result) { r.answer(c, id, typ, res) }
	switch f.Type {
	case protocol.TypeSend:
		if f.Room != "" && !c.Joined(f.Room) {
			answer(result{err: errNotMember})
			return
		}
		r.route(store.Append{Mid: r.newMid(), From: c.User, To: f.To, Room: f.Room, Body: f.Body,
			TS: time.Now().UnixMilli(), Key: f.Key}, c, answer)
	case protocol.TypeJoin:
		room := strings.Clone(f.Room) // kept for the life of the membership
		added, err := c.Join(room)
		if err != nil {
			answer(result{err: err})
			return
		}
		if !added {
			answer(result{status: protocol.StatusOK})
			return
		}
		replay := f.HasSince && r.cfg.Store != nil
		if replay {
			// Live messages wait from before the registration, so that
			// none falls between the replay and live delivery.
			c.BeginReplay(room)
		}
		err = r.updateLocal(Key{Room: true, Name: room}, c, true)
		through := f.Since
		if err == nil && replay {
			through, err = r.replayRoom(c, room, f.Since)
		}
		if replay {
			c.EndReplay(room, through)
		}
		if err != nil {
			c.Leave(room)
			_ = r.updateLocal(Key{Room: true, Name: room}, c, false)
			answer(result{err: err})
			return
		}
		answer(result{status: protocol.StatusOK})
	case protocol.TypeSync:
		if r.cfg.Store == nil {
			answer(result{err: errNoStore})
			return
		}
		r.sync(c, f.After, answer)
	case protocol.TypeLeave:
		if c.Leave(f.Room) {
			if err := r.updateLocal(Key{Room: true, Name: f.Room}, c, false); err != nil {
				answer(result{err: err})
				return
			}
		}
		answer(result{status: protocol.StatusOK})
	}
}
