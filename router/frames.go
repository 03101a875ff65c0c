package router

import (
	"strings"
	"time"

	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/store"
)

// HandleFrame acts on a frame a client connection sent (send, join, leave,
// sync, the group frames, group_members, read, conversations, typing, watch,
// unwatch); each gets exactly one answer through c.Answer (a typing frame
// without id a nil one). It runs in the
// connection's reader, so that its frames are routed in order; only a
// lookup at an owner (on a cache miss), a store call or a join waits here.
func (r *Router) HandleFrame(c Conn, f *protocol.Frame) {
	id, typ := f.ID, f.Type // f is reused by the reader once this returns
	answer := func(res result) { r.answer(c, id, typ, res) }
	cl := r.local.client(c)
	if cl == nil {
		answer(result{err: errNotAttached})
		return
	}
	switch f.Type {
	case protocol.TypeSend:
		r.handleSend(cl, f, answer)
	case protocol.TypeJoin:
		r.handleJoin(cl, f, answer)
	case protocol.TypeLeave:
		r.handleLeave(cl, f, answer)
	case protocol.TypeSync:
		if f.Group != "" {
			r.handleSyncGroup(cl, f, answer)
			return
		}
		r.handleSync(cl, f, answer)
	case protocol.TypeGroupCreate, protocol.TypeGroupAdd, protocol.TypeGroupRemove, protocol.TypeGroupLeave:
		r.handleGroupChange(cl, f, answer)
	case protocol.TypeGroupMembers:
		r.handleGroupMembers(cl, f, answer)
	case protocol.TypeRead:
		r.handleRead(cl, f, answer)
	case protocol.TypeConversations:
		r.handleConversations(cl, f, answer)
	case protocol.TypeTyping:
		r.handleTyping(cl, f, answer)
	case protocol.TypeWatch:
		r.handleWatch(cl, f, answer)
	case protocol.TypeUnwatch:
		r.handleUnwatch(cl, f, answer)
	}
}

// handleSend routes a message to a user, to a room this connection joined,
// or to a group (whose membership the store checks).
func (r *Router) handleSend(c *client, f *protocol.Frame, answer func(result)) {
	if f.Room != "" && !c.joined(f.Room) {
		answer(result{err: errNotMember})
		return
	}
	r.route(store.Append{Mid: r.newMid(), From: c.User(), To: f.To, Room: f.Room, Group: f.Group, Body: f.Body,
		TS: time.Now().UnixMilli(), Key: f.Key}, c, answer)
}

// handleJoin records the connection in a room at the room's owner, after
// replaying the room's history since the offset the client gave.
func (r *Router) handleJoin(c *client, f *protocol.Frame, answer func(result)) {
	room := strings.Clone(f.Room) // kept for the life of the membership
	added, err := c.join(room, r.cfg.MaxRooms)
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
		// Live messages wait from before the registration, so that none
		// falls between the replay and live delivery.
		c.beginReplay(room)
	}
	err = r.updateLocal(Key{Room: true, Name: room}, c, true)
	through := f.Since
	if err == nil && replay {
		through, err = r.replayRoom(c, room, f.Since)
	}
	if replay {
		c.endReplay(room, through)
	}
	if err != nil {
		c.leave(room)
		_ = r.updateLocal(Key{Room: true, Name: room}, c, false)
		answer(result{err: err})
		return
	}
	answer(result{status: protocol.StatusOK})
}

// handleLeave takes the connection out of a room at the room's owner.
func (r *Router) handleLeave(c *client, f *protocol.Frame, answer func(result)) {
	if c.leave(f.Room) {
		if err := r.updateLocal(Key{Room: true, Name: f.Room}, c, false); err != nil {
			answer(result{err: err})
			return
		}
	}
	answer(result{status: protocol.StatusOK})
}

// handleSync writes a page of the user's inbox.
func (r *Router) handleSync(c *client, f *protocol.Frame, answer func(result)) {
	if r.cfg.Store == nil {
		answer(result{err: errNoStore})
		return
	}
	r.sync(c, f.After, answer)
}
