package store

import (
	"context"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// The embedded engine's groups: a group record, a member record per
// member (which holds its read offset), and an entry per user and group
// to list a user's groups (see the keys in embedded.go). A membership
// change is one transaction of its own on the committer goroutine: its
// event in the stream and the records it changes are one batch.

// memberID names a member record.
type memberID struct{ group, user string }

// groupState is a group record.
type groupState struct {
	exists  bool
	created int64 // ms
	version int64 // offset of the newest membership event
	members int64
	lastTS  int64 // ts of the stream's newest message or event
	through int64 // the newest offset retention removed
	dirty   bool
}

// group value: version 1, created, version, members, lastTS, through.
func (g *groupState) appendTo(b []byte) []byte {
	return appendVarints(b, g.created, g.version, g.members, g.lastTS, g.through)
}

func (g *groupState) decode(v []byte) error {
	g.exists = true
	return decodeVarints(v, &g.created, &g.version, &g.members, &g.lastTS, &g.through)
}

// memberState is a member record.
type memberState struct {
	exists            bool
	admin             bool
	sinceTS, sinceSeq int64 // the event that added it
	read              int64 // its read offset in the stream
	dirty             bool
}

// member value: version 1, admin (0 or 1), sinceTS, sinceSeq, read.
func (m *memberState) appendTo(b []byte) []byte {
	admin := int64(0)
	if m.admin {
		admin = 1
	}
	return appendVarints(b, admin, m.sinceTS, m.sinceSeq, m.read)
}

func (m *memberState) decode(v []byte) error {
	var admin int64
	err := decodeVarints(v, &admin, &m.sinceTS, &m.sinceSeq, &m.read)
	m.exists, m.admin = true, admin == 1
	return err
}

func groupKey(b []byte, group string) []byte { return append(append(b, 'g'), group...) }

func memberKey(b []byte, group, user string) []byte { return pairKey(b, 'n', group, user) }

func joinedKey(b []byte, user, group string) []byte { return pairKey(b, 'j', user, group) }

func (t *txn) group(name string) (groupState, error) {
	var g groupState
	if err := load(t, t.groups, name, &g, func() []byte { return groupKey(t.key[:0], name) }, g.decode); err != nil {
		return g, fmt.Errorf("group %s: %w", name, err)
	}
	return g, nil
}

func (t *txn) putGroup(name string, g groupState) {
	g.dirty = true
	t.groups[name] = g
}

func (t *txn) member(group, user string) (memberState, error) {
	var m memberState
	if err := load(t, t.members, memberID{group, user}, &m, func() []byte { return memberKey(t.key[:0], group, user) }, m.decode); err != nil {
		return m, fmt.Errorf("member %s/%s: %w", group, user, err)
	}
	return m, nil
}

// membership is user's member record in group and the group's record;
// refused says what to answer when user is not a member.
func (t *txn) membership(what, group, user string) (g groupState, m memberState, refused, err error) {
	if g, err = t.group(group); err != nil {
		return g, m, nil, err
	}
	if m, err = t.member(group, user); err != nil || m.exists {
		return g, m, nil, err
	}
	return g, m, notMember(what, group, user, g.exists), nil
}

func (t *txn) putMember(group, user string, m memberState) {
	m.dirty = true
	t.members[memberID{group, user}] = m
}

func (e *embedded) change(ctx context.Context, cr *changeRequest) (Changed, error) {
	r := &request{op: opChange, change: cr}
	if err := e.c.do(ctx, r); err != nil {
		return Changed{}, err
	}
	return r.changed, nil
}

// runChange commits one membership change in a transaction of its own;
// a refused change writes nothing.
func (e *embedded) runChange(cr *changeRequest) (ch Changed, err error) {
	var refused error
	err = e.update(func(b *pebble.Batch) error {
		t := e.begin(b)
		defer t.end()
		var err error
		if ch, refused, err = t.change(cr); err != nil {
			return fmt.Errorf("store commit: %w", err)
		}
		if refused != nil {
			return refused // nothing is committed
		}
		return t.flush()
	})
	return ch, err
}

// change applies cr: refused says why it may not be made.
func (t *txn) change(cr *changeRequest) (ch Changed, refused, err error) {
	c := &cr.c
	g, err := t.group(c.Group)
	if err != nil {
		return ch, nil, err
	}
	if cr.kind == changeCreate {
		if g.exists {
			return ch, fmt.Errorf("create group %q: %w", c.Group, ErrConflict), nil
		}
		return t.create(cr)
	}
	_, by, refused, err := t.membership(cr.kind.String(), c.Group, c.By)
	if err != nil || refused != nil {
		return ch, refused, err
	}
	switch cr.kind {
	case changeAdd, changeRemove:
		if !by.admin {
			return ch, fmt.Errorf("%s %q: %s: %w", cr.kind, c.Group, c.By, ErrForbidden), nil
		}
		target, err := t.member(c.Group, c.User)
		if err != nil {
			return ch, nil, err
		}
		if cr.kind == changeAdd {
			return t.add(cr, g, by, target)
		}
		if !target.exists {
			return ch, notMember(cr.kind.String(), c.Group, c.User, true), nil
		}
		return t.remove(cr, g, by, c.User)
	}
	return t.leave(cr, g, by)
}

// event appends kind's event to the group's stream and makes it the
// group's version.
func (t *txn) event(cr *changeRequest, g *groupState, admin string) (int64, error) {
	s := GroupStream(cr.c.Group)
	seq, err := t.next(s)
	if err != nil {
		return 0, err
	}
	m := cr.c.event(cr.kind)
	m.Admin = admin
	g.version, g.lastTS = seq, cr.c.TS
	return seq, t.setMessage(s, seq, &m, 0, 0)
}

// join makes user a member from the event at seq (read up to it if it
// caused it, else just before it, so that the event counts as unread).
func (t *txn) join(group, user string, admin bool, seq, ts int64, caused bool) error {
	u, err := t.user(user)
	if err != nil {
		return err
	}
	u.groups++
	t.putUser(user, u)
	read := seq - 1
	if caused {
		read = seq
	}
	t.putMember(group, user, memberState{exists: true, admin: admin, sinceTS: ts, sinceSeq: seq, read: read})
	return t.b.Set(joinedKey(t.key[:0], user, group), nil, nil)
}

// part ends user's membership.
func (t *txn) part(group, user string) error {
	u, err := t.user(user)
	if err != nil {
		return err
	}
	u.groups = max(u.groups-1, 0)
	t.putUser(user, u)
	t.putMember(group, user, memberState{})
	return t.b.Delete(joinedKey(t.key[:0], user, group), nil)
}

// roomFor refuses a user already in MaxUserGroups groups.
func (t *txn) roomFor(kind changeKind, group, user string) (refused, err error) {
	u, err := t.user(user)
	if err != nil || u.groups < MaxUserGroups {
		return nil, err
	}
	return fmt.Errorf("%s %q: %s is in %d groups, at most %d: %w", kind, group, user, u.groups, MaxUserGroups, ErrTooMany), nil
}

func (t *txn) create(cr *changeRequest) (ch Changed, refused, err error) {
	c := &cr.c
	for _, u := range append([]string{c.By}, cr.members...) {
		if refused, err := t.roomFor(cr.kind, c.Group, u); refused != nil || err != nil {
			return ch, refused, err
		}
	}
	g := groupState{exists: true, created: c.TS, members: int64(len(cr.members) + 1)}
	seq, err := t.event(cr, &g, "")
	if err != nil {
		return ch, nil, err
	}
	t.putGroup(c.Group, g)
	if err := t.join(c.Group, c.By, true, seq, c.TS, true); err != nil {
		return ch, nil, err
	}
	for _, u := range cr.members {
		if err := t.join(c.Group, u, false, seq, c.TS, false); err != nil {
			return ch, nil, err
		}
	}
	return Changed{Seq: seq, Version: seq}, nil, nil
}

func (t *txn) add(cr *changeRequest, g groupState, by, target memberState) (ch Changed, refused, err error) {
	c := &cr.c
	if target.exists {
		return Changed{Version: g.version}, nil, nil
	}
	if g.members >= int64(t.e.opts.MaxGroupMembers) {
		return ch, fmt.Errorf("add member %q: %d members, at most %d: %w", c.Group, g.members, t.e.opts.MaxGroupMembers, ErrTooMany), nil
	}
	if refused, err := t.roomFor(cr.kind, c.Group, c.User); refused != nil || err != nil {
		return ch, refused, err
	}
	seq, err := t.event(cr, &g, "")
	if err != nil {
		return ch, nil, err
	}
	g.members++
	t.putGroup(c.Group, g)
	by.read = seq
	t.putMember(c.Group, c.By, by)
	if err := t.join(c.Group, c.User, false, seq, c.TS, false); err != nil {
		return ch, nil, err
	}
	return Changed{Seq: seq, Version: seq}, nil, nil
}

func (t *txn) remove(cr *changeRequest, g groupState, by memberState, user string) (ch Changed, refused, err error) {
	c := &cr.c
	seq, err := t.event(cr, &g, "")
	if err != nil {
		return ch, nil, err
	}
	g.members--
	t.putGroup(c.Group, g)
	by.read = seq
	t.putMember(c.Group, c.By, by)
	if err := t.part(c.Group, user); err != nil {
		return ch, nil, err
	}
	return Changed{Seq: seq, Version: seq}, nil, nil
}

func (t *txn) leave(cr *changeRequest, g groupState, me memberState) (ch Changed, refused, err error) {
	c := &cr.c
	admin := ""
	if me.admin && g.members > 1 {
		all, err := members(t.e.db, c.Group)
		if err != nil {
			return ch, nil, err
		}
		admin = heir(all, c.By)
	}
	seq, err := t.event(cr, &g, admin)
	if err != nil {
		return ch, nil, err
	}
	if err := t.part(c.Group, c.By); err != nil {
		return ch, nil, err
	}
	if admin != "" {
		m, err := t.member(c.Group, admin)
		if err != nil {
			return ch, nil, err
		}
		m.admin = true
		t.putMember(c.Group, admin, m)
	}
	g.members--
	if g.members == 0 {
		g.exists = false // its counter stays: a new group of that name goes on from it
	}
	t.putGroup(c.Group, g)
	return Changed{Seq: seq, Version: seq, Admin: admin, Gone: g.members == 0}, nil, nil
}

// members lists group's members from r, by user id.
func members(r pebble.Reader, group string) ([]Member, error) {
	var list []Member
	prefix := memberKey(nil, group, "")
	err := scan(r, prefix, prefixEnd(prefix), func(k, v []byte) (bool, error) {
		var m memberState
		if err := m.decode(v); err != nil {
			return false, err
		}
		list = append(list, Member{User: string(k[len(prefix):]), Admin: m.admin, Since: m.sinceTS, Seq: m.sinceSeq})
		return true, nil
	})
	return list, err
}

func (e *embedded) group(_ context.Context, name string) (info GroupInfo, err error) {
	snap := e.db.NewSnapshot()
	defer func() {
		if cerr := snap.Close(); err == nil {
			err = cerr
		}
	}()
	var g groupState
	if _, err := get(snap, groupKey(nil, name), g.decode); err != nil {
		return info, err
	}
	if !g.exists {
		return info, fmt.Errorf("group %q: %w", name, ErrNoGroup)
	}
	info = GroupInfo{Group: name, Version: g.version}
	if info.Members, err = members(snap, name); err != nil {
		return info, err
	}
	_, err = get(snap, counterKey(nil, GroupStream(name)), func(v []byte) (err error) {
		info.Last, err = decodeCounter(v)
		return err
	})
	return info, err
}

func (e *embedded) userGroups(_ context.Context, user string) ([]string, error) {
	return userGroups(e.db, user)
}

// userGroups lists the groups of user in r, by name.
func userGroups(r pebble.Reader, user string) ([]string, error) {
	var names []string
	prefix := joinedKey(nil, user, "")
	err := scan(r, prefix, prefixEnd(prefix), func(k, _ []byte) (bool, error) {
		names = append(names, string(k[len(prefix):]))
		return true, nil
	})
	return names, err
}

// readGroup reads the member record and the stream in one snapshot, so
// that a member removed meanwhile reads nothing after its removal.
func (e *embedded) readGroup(_ context.Context, user, group string, after int64, limit int) (msgs []Message, last int64, more bool, err error) {
	snap := e.db.NewSnapshot()
	defer func() {
		if cerr := snap.Close(); err == nil {
			err = cerr
		}
	}()
	var m memberState
	if _, err := get(snap, memberKey(nil, group, user), m.decode); err != nil {
		return nil, 0, false, err
	}
	if !m.exists {
		var g groupState
		if _, err := get(snap, groupKey(nil, group), g.decode); err != nil {
			return nil, 0, false, err
		}
		return nil, 0, false, notMember("read group", group, user, g.exists)
	}
	return readStream(snap, GroupStream(group), max(after, m.sinceSeq-1), limit)
}
