package router

import (
	"strings"
	"time"

	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/store"
)

// A client frame is served by the function registered for its type, in
// the file of the capability it belongs to (handleFrames in an init):
// frames.go serves send, join, leave and sync; groups.go the group frames;
// reads.go read and conversations; typing.go and presence.go theirs. A new
// kind of frame is one more file, not a case in a switch here.

// frameHandler serves one client frame; it calls answer exactly once.
type frameHandler func(r *Router, c *client, f *protocol.Frame, answer func(result))

var frameHandlers = map[string]frameHandler{}

// handleFrames registers h as the server of frames of the given types. It
// runs at init; a type registered twice is a programming error.
func handleFrames(h frameHandler, types ...string) {
	for _, t := range types {
		if _, dup := frameHandlers[t]; dup {
			panic("router: frame type " + t + " registered twice")
		}
		frameHandlers[t] = h
	}
}

func init() {
	handleFrames((*Router).handleSend, protocol.TypeSend)
	handleFrames((*Router).handleJoin, protocol.TypeJoin)
	handleFrames((*Router).handleLeave, protocol.TypeLeave)
	handleFrames((*Router).handleSync, protocol.TypeSync)
}

// HandleFrame acts on a frame a client connection sent; each gets exactly
// one answer through c.Answer (a typing frame without id a nil one). It runs
// in the connection's reader, so that its frames are routed in order; only a
// lookup at an owner (on a cache miss), a store call or a join waits here,
// and the connection's socket stays open (shut, but not closed) while it
// does.
func (r *Router) HandleFrame(c Conn, f *protocol.Frame) {
	id, typ := f.ID, f.Type // f is reused by the reader once this returns
	answer := func(res result) { r.answer(c, id, typ, res) }
	cl := r.local.client(c)
	h := frameHandlers[f.Type]
	switch {
	case cl == nil:
		answer(result{err: errNotAttached})
	case h == nil: // protocol.DecodeFrame refuses what no one serves
		answer(result{err: &refused{protocol.CodeBadRequest, "unknown type " + f.Type}})
	default:
		h(r, cl, f, answer)
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

// handleSync writes a page of the user's inbox, or of a group's stream.
func (r *Router) handleSync(c *client, f *protocol.Frame, answer func(result)) {
	if f.Group != "" {
		r.handleSyncGroup(c, f, answer)
		return
	}
	if r.cfg.Store == nil {
		answer(result{err: errNoStore})
		return
	}
	r.sync(c, f.After, answer)
}
