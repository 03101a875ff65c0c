package router

import (
	"context"
	"time"

	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/session"
	"github.com/shardchat/shard/store"
)

// Publish routes a message that comes from the HTTP API rather than from a
// connection; it waits for the answer a client would get.
func (r *Router) Publish(ctx context.Context, from, to, room, body string) (status string, recipients int, seq int64, err error) {
	done := make(chan result, 1)
	// The API's sender is not a user: no copy to an inbox or to devices.
	r.route(store.Append{Mid: r.newMid(), From: from, To: to, Room: room, Body: body,
		TS: time.Now().UnixMilli(), NoSenderCopy: true}, nil, func(res result) { done <- res })
	select {
	case res := <-done:
		return res.status, res.recipients, res.seq, res.err
	case <-ctx.Done():
		return "", 0, 0, ctx.Err()
	}
}

// route sends one chat message from sender (nil for the API): stored first
// when there is a store, then to its recipients' nodes.
func (r *Router) route(a store.Append, sender *session.Conn, done func(result)) {
	if a.Room != "" {
		r.m.ChatMessages.WithLabelValues("room").Inc()
	} else {
		r.m.ChatMessages.WithLabelValues("direct").Inc()
	}
	if r.cfg.Store != nil {
		r.storeAndRoute(a, sender, done)
		return
	}
	m := protocol.Msg{Mid: a.Mid, From: a.From, To: a.To, Room: a.Room, Body: a.Body, TS: a.TS}
	r.routeLive(m, 0, sender, func(res result) {
		res.mid = a.Mid
		done(res)
	})
}

// routeLive sends m to the connections of its recipients (room members but
// the sender, or the recipient's devices and the sender's other devices).
// With a store, m.Seq is its offset in the recipient's stream and senderSeq
// the one in the sender's inbox, which the sender's devices read it from.
func (r *Router) routeLive(m protocol.Msg, senderSeq int64, sender *session.Conn, done func(result)) {
	frame := protocol.AppendMsg(make([]byte, 0, 160+len(m.Body)), &m)
	if m.Room != "" {
		r.routeRoom(&forward{a: m.Room, b: m.From, frame: frame, seq: m.Seq}, sender, done)
		return
	}
	f := &forward{a: m.To, frame: frame, copy: frame}
	if sender != nil {
		f.b = m.From
		if senderSeq > 0 {
			m.Seq = senderSeq
			f.copy = protocol.AppendMsg(make([]byte, 0, 160+len(m.Body)), &m)
		}
	}
	r.routeDirect(f, sender, done)
}

// routeDirect delivers a direct message (f.a is the recipient) to every
// connection of the recipient, and f.copy to every connection of f.b, the
// sender, but the sending one (sender; the API's sender has none, and f.b
// is empty then). done gets delivered when at least one connection of the
// recipient got it.
func (r *Router) routeDirect(f *forward, sender *session.Conn, done func(result)) {
	to, copyTo := f.a, f.b
	var targets []string
	holders := 0
	if r.cfg.Mode == Broadcast {
		targets = r.others()
	} else {
		locs, err := r.locate(Key{Name: to})
		if err != nil {
			done(result{err: err})
			return
		}
		targets = r.appendRemote(targets, locs)
		holders = len(targets) // the nodes that hold `to`, by the answer we used
		if copyTo != "" && copyTo != to {
			// The sender's other devices: their node is usually this one.
			if locs, err := r.locate(Key{Name: copyTo}); err == nil {
				targets = r.appendRemote(targets, locs)
			} else {
				r.log.Debug("sender copies not routed", "user", copyTo, "err", err)
			}
		}
	}
	fan := &fanout{direct: true, done: done}
	fan.add(r.deliverDirect(to, copyTo, sender, f.frame, f.copy))
	if len(targets) == 0 {
		fan.finish()
		return
	}
	fan.expect(len(targets))
	f.mode = forwardDirect
	payload := f.append(make([]byte, 0, len(f.frame)+len(f.copy)+len(to)+len(copyTo)+16))
	for i, node := range targets {
		if i >= holders {
			r.request(node, kindForward, 1, payload, fan.reply)
			continue
		}
		// A holder that has no connection of `to` proves the answer wrong
		// (its owner's word of the change was lost): ask afresh next time.
		r.request(node, kindForward, 1, payload, func(p []byte, err error) {
			if got, refused, derr := decodeDelivered(p); err == nil && derr == nil && got == 0 && refused == 0 {
				r.cache.invalidate(Key{Name: to})
			}
			fan.reply(p, err)
		})
	}
}

// routeRoom delivers a room message (f.a is the room, f.b the sender's user)
// to every joined connection but the sending one. done gets the number of
// connections it was written to.
func (r *Router) routeRoom(f *forward, sender *session.Conn, done func(result)) {
	room := f.a
	var targets []string
	if r.cfg.Mode == Broadcast {
		targets = r.others()
	} else {
		locs, err := r.locate(Key{Room: true, Name: room})
		if err != nil {
			done(result{err: err})
			return
		}
		targets = r.appendRemote(targets, locs)
	}
	fan := &fanout{done: done}
	fan.add(r.deliverRoom(room, f.seq, sender, f.frame), 0)
	if len(targets) == 0 {
		fan.finish()
		return
	}
	fan.expect(len(targets))
	f.mode = forwardRoom
	payload := f.append(make([]byte, 0, len(f.frame)+len(room)+len(f.b)+16))
	for _, node := range targets {
		r.request(node, kindForward, 1, payload, fan.reply)
	}
}

// appendRemote adds the nodes of locs other than this one, once each.
func (r *Router) appendRemote(targets []string, locs []Location) []string {
next:
	for _, l := range locs {
		if l.Node == r.cfg.Self {
			continue
		}
		for _, t := range targets {
			if t == l.Node {
				continue next
			}
		}
		targets = append(targets, l.Node)
	}
	return targets
}

// others is every ring member but this node: the broadcast baseline.
func (r *Router) others() []string {
	members := r.view.Load().ring.Members()
	out := members[:0]
	for _, m := range members {
		if m != r.cfg.Self {
			out = append(out, m)
		}
	}
	return out
}
