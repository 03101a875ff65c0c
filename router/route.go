package router

import (
	"context"
	"slices"
	"time"

	"github.com/shardchat/shard/link"
	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/store"
)

// Published is what a message sent through the HTTP API became, as a
// client's ack would say.
type Published struct {
	Status     string
	Recipients int
	Seq        int64
}

// Publish routes a message that comes from the HTTP API rather than from a
// connection, to exactly one of to, room and group (whose member from must
// be); it waits for the answer a client would get.
func (r *Router) Publish(ctx context.Context, from, to, room, group, body string) (Published, error) {
	done := make(chan result, 1)
	// The API's sender is not a user: no copy to an inbox or to devices.
	r.route(store.Append{Mid: r.newMid(), From: from, To: to, Room: room, Group: group, Body: body,
		TS: time.Now().UnixMilli(), NoSenderCopy: true}, nil, func(res result) { done <- res })
	select {
	case res := <-done:
		return Published{res.status, res.recipients, res.seq}, res.err
	case <-ctx.Done():
		return Published{}, ctx.Err()
	}
}

// Refusal is how an error of Publish, ChangeGroup, Group or Conversations
// reaches a client: a protocol error code (unavailable for an error the
// cluster may not have later) and a message.
func Refusal(err error) (code, message string) { return refusal(err) }

// route sends one chat message from sender (nil for the API): stored first
// when there is a store, then to its recipients' nodes.
func (r *Router) route(a store.Append, sender *client, done func(result)) {
	switch {
	case a.Group != "":
		if r.cfg.Store == nil {
			done(result{err: errNeedsStore})
			return
		}
		r.m.chat.with("group").Inc()
	case a.Room != "":
		r.m.chat.with("room").Inc()
	default:
		r.m.chat.with("direct").Inc()
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

// A delivery is one frame on its way to the connections of its target, on
// every node that holds one. It names its bytes, its target, and whether it
// was stored first, so that traffic that is never stored takes the same
// road as a message that is.
type delivery struct {
	target Key // a user (a direct message: every connection of the user) or a room
	// users, when set, is the target instead of target: every connection of
	// each (a group's members).
	users []string
	from  string // direct: the sender, whose other connections get copy; "" for none
	frame []byte // the bytes the target's connections get, written as they are
	// copy is what the sender's other connections get when it differs from
	// frame (with a store, each inbox has its own offset); nil: frame.
	copy []byte
	seq  int64   // a stored room message's offset, for the handover from a replay (0: none)
	skip *client // the sending connection, which gets nothing; nil for none
	// stored: the message was appended to the store before it was routed,
	// so a recipient that no connection reaches now finds it in its inbox.
	stored bool
	// ephemeral: not a message but a signal about one (a receipt), never
	// stored, not counted as a delivery of a message.
	ephemeral bool
	// offline, when set, hears which of users have no connection anywhere
	// (a stored group message: their push notification).
	offline func(users []string)
}

// routeLive sends m to the connections of its recipients (room members but
// the sender, or the recipient's devices and the sender's other devices).
// With a store, m.Seq is its offset in the recipient's stream and senderSeq
// the one in the sender's inbox, which the sender's devices read it from.
func (r *Router) routeLive(m protocol.Msg, senderSeq int64, sender *client, done func(result)) {
	frame := protocol.AppendMsg(make([]byte, 0, 160+len(m.Body)), &m)
	d := &delivery{frame: frame, skip: sender, stored: r.cfg.Store != nil}
	switch {
	case m.Room != "":
		d.target, d.from, d.seq = Key{Room: true, Name: m.Room}, m.From, m.Seq
	case sender != nil:
		d.target, d.from = Key{Name: m.To}, m.From
		if senderSeq > 0 {
			m.Seq = senderSeq
			d.copy = protocol.AppendMsg(make([]byte, 0, 160+len(m.Body)), &m)
		}
	default: // the API's sender has no devices to copy to
		d.target = Key{Name: m.To}
	}
	r.deliver(d, done)
}

// deliver hands d to its target's connections here and forwards it once to
// each other node that holds one. done gets the outcome when every node it
// went to has answered: for a user, whether at least one connection of the
// user got it; for a room, how many connections did.
func (r *Router) deliver(d *delivery, done func(result)) {
	if d.users != nil {
		r.deliverToUsers(d, done)
		return
	}
	fan := &fanout{direct: !d.target.Room, stored: d.stored, done: done}
	var nodes [4]string // most deliveries go to a node or two: no allocation
	targets, holders, err := r.targets(d, nodes[:0])
	if err != nil {
		fan.fail(err)
		return
	}
	fan.add(r.deliverLocal(d))
	if len(targets) == 0 {
		fan.finish()
		return
	}
	fan.expect(len(targets))
	payload := appendForward(make([]byte, 0, len(d.frame)+len(d.copy)+len(d.target.Name)+len(d.from)+16), d)
	for i, node := range targets {
		if i >= holders {
			r.request(node, kindForward, 1, payload, fan.reply)
			continue
		}
		// A holder that has no connection of the user proves the answer
		// wrong (its owner's word of the change was lost): ask afresh next
		// time.
		r.request(node, kindForward, 1, payload, func(p []byte, err error) {
			if got, refused, derr := decodeDelivered(p); err == nil && derr == nil && got == 0 && refused == 0 {
				r.cache.invalidate(d.target)
			}
			fan.reply(p, err)
		})
	}
}

// deliverToUsers hands d to every connection of each of d.users but d.skip:
// here, and with one forward to each other node that holds any, naming the
// users it holds. done gets `sent` with the connections it was written to.
// A user whose owner cannot tell where it is now gets it from the store.
func (r *Router) deliverToUsers(d *delivery, done func(result)) {
	fan := &fanout{done: done}
	byNode := make(map[string][]string)
	if r.cfg.Mode == Broadcast {
		for _, node := range r.others() {
			byNode[node] = d.users
		}
	} else {
		locs, unknown := r.locateUsers(d.users)
		if len(unknown) > 0 {
			r.log.Debug("users not located for a delivery", "users", len(unknown), "of", len(d.users))
		}
		var offline []string
		for i, ls := range locs {
			if len(ls) == 0 && d.offline != nil && !slices.Contains(unknown, i) {
				offline = append(offline, d.users[i])
			}
			for _, l := range ls {
				if l.Node != r.cfg.Self {
					byNode[l.Node] = append(byNode[l.Node], d.users[i])
				}
			}
		}
		if len(offline) > 0 {
			d.offline(offline)
		}
	}
	fan.add(r.deliverLocal(d))
	if len(byNode) == 0 {
		fan.finish()
		return
	}
	fan.expect(len(byNode))
	for node, users := range byNode {
		part := *d
		part.users = users
		payload := appendForward(make([]byte, 0, len(d.frame)+16*len(users)+32), &part)
		r.request(node, kindForward, 1, payload, fan.reply)
	}
}

// targets appends to into the other nodes d goes to: those holding its
// target (the first holders of the list), then those holding only the
// sender's other connections. Under broadcast routing it is every other
// node.
func (r *Router) targets(d *delivery, into []string) (targets []string, holders int, err error) {
	if r.cfg.Mode == Broadcast {
		return r.others(), 0, nil
	}
	locs, err := r.locate(d.target)
	if err != nil {
		return nil, 0, err
	}
	targets = r.appendRemote(into, locs)
	if d.target.Room {
		return targets, 0, nil
	}
	holders = len(targets)
	if d.from != "" && d.from != d.target.Name {
		// The sender's other devices: their node is usually this one.
		if locs, err := r.locate(Key{Name: d.from}); err == nil {
			targets = r.appendRemote(targets, locs)
		} else {
			r.log.Debug("sender copies not routed", "user", d.from, "err", err)
		}
	}
	return targets, holders, nil
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

func init() { servePeer(kindForward, "forward", (*Router).serveForward) }

// serveForward hands a delivery from another node to this node's
// connections and answers how many got it; one that carries a frame a
// client may not get (carry.go) reaches nobody.
func (r *Router) serveForward(from link.Peer, p []byte, reply func([]byte)) {
	d, err := decodeForward(p)
	if err == nil && (!carried(d.frame) || d.copy != nil && !carried(d.copy)) {
		err = errNotCarried
	}
	if err != nil {
		r.log.Warn("bad forward from peer", "peer", from.Name, "err", err)
		reply(nil)
		return
	}
	got, refused := r.deliverLocal(&d)
	reply(appendDelivered(nil, got, refused))
}
