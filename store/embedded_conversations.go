package store

import (
	"context"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// The embedded engine's read state and presence: one record per direct
// conversation and per user (see the keys in embedded.go); a group's read
// offset is on its member record (embedded_groups.go).

// convID names a direct conversation as one of its two users sees it.
type convID struct{ user, peer string }

// convState is a direct conversation in user's inbox.
type convState struct {
	// last is the offset of its newest message in user's inbox, lastPeer
	// the offset in peer's inbox of its newest message that has a copy
	// there, ts the newest message's time.
	last, lastPeer, ts int64
	// count is the number of peer's messages so far: each message carries
	// the count at it, so that the count at any read offset is known.
	count int64
	// read is user's read offset, readPeer the receipt it gives peer,
	// readCount the count at read (or at the newest message retention
	// removed after it): unread is count - readCount.
	read, readPeer, readCount int64
	dirty                     bool
}

// conv value: version 1, last, lastPeer, ts, count, read, readPeer, readCount.
func (c *convState) appendTo(b []byte) []byte {
	return appendVarints(b, c.last, c.lastPeer, c.ts, c.count, c.read, c.readPeer, c.readCount)
}

func (c *convState) decode(v []byte) error {
	return decodeVarints(v, &c.last, &c.lastPeer, &c.ts, &c.count, &c.read, &c.readPeer, &c.readCount)
}

func (c *convState) unread() int64 { return max(c.count-c.readCount, 0) }

func convKey(b []byte, user, peer string) []byte { return pairKey(b, 'c', user, peer) }

// conv is user's conversation with peer (zero if it has no message).
func (t *txn) conv(user, peer string) (convState, error) {
	var c convState
	if err := load(t, t.convs, convID{user, peer}, &c, func() []byte { return convKey(t.key[:0], user, peer) }, c.decode); err != nil {
		return c, fmt.Errorf("conversation %s/%s: %w", user, peer, err)
	}
	return c, nil
}

func (t *txn) putConv(user, peer string, c convState) {
	c.dirty = true
	t.convs[convID{user, peer}] = c
}

// userState is what is kept of a user beside its messages.
type userState struct {
	groups   int64 // the groups it belongs to
	lastSeen int64 // ms since the epoch
	dirty    bool
}

// user value: version 1, groups, lastSeen.
func (u *userState) appendTo(b []byte) []byte { return appendVarints(b, u.groups, u.lastSeen) }
func (u *userState) decode(v []byte) error    { return decodeVarints(v, &u.groups, &u.lastSeen) }

func userKey(b []byte, user string) []byte { return append(append(b, 'p'), user...) }

func (t *txn) user(name string) (userState, error) {
	var u userState
	if err := load(t, t.users, name, &u, func() []byte { return userKey(t.key[:0], name) }, u.decode); err != nil {
		return u, fmt.Errorf("user %s: %w", name, err)
	}
	return u, nil
}

func (t *txn) putUser(name string, u userState) {
	u.dirty = true
	t.users[name] = u
}

func (e *embedded) setRead(ctx context.Context, m ReadMark) (ReadMarked, error) {
	r := &request{op: opRead, mark: m}
	if err := e.c.do(ctx, r); err != nil {
		return ReadMarked{}, err
	}
	return r.marked, nil
}

// setRead moves a read offset forward (see ReadState) and sets r.marked,
// or r.err for a group user is not a member of.
func (t *txn) setRead(r *request) error {
	m := &r.mark
	if m.Group != "" {
		return t.setGroupRead(r)
	}
	c, err := t.conv(m.User, m.With)
	if err != nil {
		return err
	}
	seq := min(m.Seq, c.last)
	if seq <= c.read {
		r.marked = ReadMarked{Read: c.read, PeerSeq: c.readPeer, Unread: c.unread()}
		return nil
	}
	peer, count := c.lastPeer, c.count
	if seq < c.last {
		if peer, count, err = t.conversationAt(m.User, m.With, c.read, seq); err != nil {
			return err
		}
	}
	c.read, c.readPeer, c.readCount = seq, max(c.readPeer, peer), max(c.readCount, count)
	t.putConv(m.User, m.With, c)
	r.marked = ReadMarked{Moved: true, Read: c.read, PeerSeq: c.readPeer, Unread: c.unread()}
	return nil
}

// conversationAt finds, in user's inbox between offsets after (excluded)
// and seq, the newest message of the conversation with peer (its count)
// and the newest that has a copy in peer's inbox (its offset there); 0
// for what it does not find. It walks back from seq: a read offset
// normally names a message of its conversation, where the walk ends at
// once.
func (t *txn) conversationAt(user, peer string, after, seq int64) (peerSeq, count int64, err error) {
	s := Inbox(user)
	it, err := t.e.db.NewIter(&pebble.IterOptions{LowerBound: msgKey(nil, s, after+1), UpperBound: msgKey(nil, s, seq+1)})
	if err != nil {
		return 0, 0, err
	}
	counted := false
	for valid := it.Last(); valid && peerSeq == 0; valid = it.Prev() {
		v, verr := it.ValueAndErr()
		if verr != nil {
			err = verr
			break
		}
		var msg Message
		p, n, derr := decodeMessage(v, &msg)
		if derr != nil {
			err = derr
			break
		}
		if !(msg.From == user && msg.To == peer) && !(msg.From == peer && msg.To == user) {
			continue
		}
		if !counted {
			count, counted = n, true
		}
		peerSeq = p
	}
	if cerr := it.Close(); err == nil {
		err = cerr
	}
	return peerSeq, count, err
}

func (t *txn) setGroupRead(r *request) error {
	m := &r.mark
	g, mem, refused, err := t.membership("read group", m.Group, m.User)
	if err != nil || refused != nil {
		r.err = refused
		return err
	}
	last, err := t.last(GroupStream(m.Group))
	if err != nil {
		return err
	}
	seq := min(m.Seq, last)
	moved := seq > mem.read
	if moved {
		mem.read = seq
		t.putMember(m.Group, m.User, mem)
	}
	r.marked = ReadMarked{Moved: moved, Read: mem.read, Unread: groupUnread(last, mem.read, g.through), Version: g.version}
	return nil
}

func (e *embedded) conversations(_ context.Context, user string) (list []Conversation, err error) {
	snap := e.db.NewSnapshot()
	defer func() {
		if cerr := snap.Close(); err == nil {
			err = cerr
		}
	}()
	prefix := convKey(nil, user, "")
	err = scan(snap, prefix, prefixEnd(prefix), func(k, v []byte) (bool, error) {
		var c convState
		if err := c.decode(v); err != nil {
			return false, err
		}
		list = append(list, Conversation{With: string(k[len(prefix):]), Last: c.last, Read: c.read, Unread: c.unread(), TS: c.ts})
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	list = boundDirect(list)
	var key []byte
	for i := range list {
		// The peer's record of the same conversation holds the receipt it
		// gave user.
		var peer convState
		key = convKey(key[:0], list[i].With, user)
		if _, err := get(snap, key, peer.decode); err != nil {
			return nil, err
		}
		list[i].PeerRead = peer.readPeer
	}
	groups, err := userGroups(snap, user)
	if err != nil {
		return nil, err
	}
	for _, name := range groups {
		var g groupState
		var mem memberState
		var last int64
		key = groupKey(key[:0], name)
		_, err := get(snap, key, g.decode)
		if err == nil {
			key = memberKey(key[:0], name, user)
			_, err = get(snap, key, mem.decode)
		}
		if err == nil {
			key = counterKey(key[:0], GroupStream(name))
			_, err = get(snap, key, func(v []byte) (err error) {
				last, err = decodeCounter(v)
				return err
			})
		}
		if err != nil {
			return nil, fmt.Errorf("group %s: %w", name, err)
		}
		list = append(list, Conversation{Group: name, Last: last, Read: mem.read,
			Unread: groupUnread(last, mem.read, g.through), TS: g.lastTS, Admin: mem.admin})
	}
	return list, nil
}

func (e *embedded) setLastSeen(ctx context.Context, user string, ms int64) error {
	return e.c.do(ctx, &request{op: opSeen, append: Append{From: user, TS: ms}})
}

func (t *txn) seen(name string, ms int64) error {
	u, err := t.user(name)
	if err != nil || ms <= u.lastSeen {
		return err
	}
	u.lastSeen = ms
	t.putUser(name, u)
	return nil
}

func (e *embedded) lastSeen(_ context.Context, users []string) (map[string]int64, error) {
	seen := make(map[string]int64, len(users))
	for _, name := range users {
		var u userState
		if _, err := get(e.db, userKey(nil, name), u.decode); err != nil {
			return nil, fmt.Errorf("user %s: %w", name, err)
		}
		if u.lastSeen > 0 {
			seen[name] = u.lastSeen
		}
	}
	return seen, nil
}
