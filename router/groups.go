package router

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/shardchat/shard/link"
	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/store"
)

func init() {
	handleFrames((*Router).handleGroupChange, protocol.TypeGroupCreate, protocol.TypeGroupAdd,
		protocol.TypeGroupRemove, protocol.TypeGroupLeave)
	handleFrames((*Router).handleGroupMembers, protocol.TypeGroupMembers)
}

// A group belongs to its users: its members live in the store, which
// decides them in the transaction that appends to the group's stream. Each
// message it stores carries the membership version at its offset (the
// offset of the newest membership event before it), and goes to exactly
// the members as of that version: a send racing a removal is either before
// it, and reaches the removed member, or after it, and does not.
//
// Member lists are kept by version. A sender's node asks the owner of the
// group's name for the members at a version it does not have (the owner
// reads the store once for every node), or reads the store itself when the
// owner cannot be asked; a list is right for every message of its version,
// so a cached one needs no invalidation: a newer version in an append is
// what says it changed. The store rebuilds an older version (MembersAt)
// for a message that raced a change.

func init() { servePeer(kindMembers, "members", (*Router).serveMembers) }

// maxCachedGroups bounds the member lists a node keeps: 10,000 groups of
// 100 members of 10 bytes is about 10 MB.
const maxCachedGroups = 10000

// memberLists is a node's member lists, one version per group.
type memberLists struct {
	mu     sync.Mutex
	groups map[string]memberList
}

type memberList struct {
	version int64
	users   []string  // shared, read-only
	read    time.Time // when it came from the owner or the store
}

// get returns group's members at version, if kept. A receipt asks for the
// version its read was made at (store.ReadMarked.Version), which is kept
// as the group's messages are.
func (m *memberLists) get(group string, version int64) ([]string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.groups[group]
	return l.users, ok && l.version == version
}

// newest returns the newest of group's member lists this node keeps, of
// whatever version, if it was read after since.
func (m *memberLists) newest(group string, since time.Time) ([]string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.groups[group]
	return l.users, ok && l.read.After(since)
}

// put keeps users as group's members at version, unless a newer version is
// kept already: the newest is what the next messages need.
func (m *memberLists) put(group string, version int64, users []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.groups == nil {
		m.groups = make(map[string]memberList)
	}
	if l, ok := m.groups[group]; ok && l.version > version {
		return
	}
	if _, ok := m.groups[group]; !ok && len(m.groups) >= maxCachedGroups {
		for g := range m.groups { // evict one at random
			delete(m.groups, g)
			break
		}
	}
	m.groups[group] = memberList{version, users, time.Now()}
}

// membersAt returns the members of group as of membership version version
// (0: as the group stands now): from this node's lists, else from the
// owner of the group's name, else from the store.
func (r *Router) membersAt(ctx context.Context, group string, version int64) ([]string, error) {
	if users, ok := r.members.get(group, version); ok {
		return users, nil
	}
	owner := r.view.Load().ring.Owner(group)
	switch owner {
	case "":
		return nil, ErrNoRing
	case r.cfg.Self:
		_, users, err := r.loadMembers(ctx, group, version)
		return users, err
	}
	users, err := r.askMembers(ctx, owner, group, version)
	if err != nil && !errors.Is(err, store.ErrNoGroup) && ctx.Err() == nil {
		// The owner only spares the store repeated reads: when it cannot
		// be asked (it died and is not known dead yet, it is leaving), the
		// store answers, so that members connected elsewhere still get
		// the message live.
		r.log.Debug("members read from the store", "group", group, "owner", owner, "err", err)
		_, users, err = r.loadMembers(ctx, group, version)
	}
	return users, err
}

// loadMembers reads group's members at version (0: now) from the store,
// and keeps the newest list.
func (r *Router) loadMembers(ctx context.Context, group string, version int64) (int64, []string, error) {
	if version > 0 {
		if users, ok := r.members.get(group, version); ok {
			return version, users, nil
		}
		// The store undoes the changes after version, if any came since:
		// only a message that raced a change is that far behind.
		users, err := r.cfg.Store.MembersAt(ctx, group, version)
		if err != nil {
			return 0, nil, err
		}
		r.members.put(group, version, users)
		return version, users, nil
	}
	info, err := r.cfg.Store.Group(ctx, group)
	if err != nil {
		return 0, nil, err
	}
	users := make([]string, len(info.Members))
	for i, m := range info.Members {
		users[i] = m.User
	}
	r.members.put(group, info.Version, users)
	return info.Version, users, nil
}

// askMembers asks owner for group's members at version (0: now).
func (r *Router) askMembers(ctx context.Context, owner, group string, version int64) ([]string, error) {
	payload := link.AppendString(nil, group)
	payload = binary.AppendUvarint(payload, uint64(version))
	p, err := r.ask(ctx, owner, kindMembers, payload)
	if err != nil {
		return nil, err
	}
	status, got, users, err := decodeMembers(p)
	switch {
	case err != nil:
		return nil, fmt.Errorf("members of %s at %s: %w", group, owner, err)
	case status == membersNoGroup:
		return nil, store.ErrNoGroup
	case status != membersKnown:
		return nil, fmt.Errorf("members of %s at %s: %w", group, owner, ErrUnsettled)
	}
	r.members.put(group, got, users)
	return users, nil
}

// Members answer statuses.
const (
	membersKnown   byte = 0 // the members at the version asked (or now, for 0)
	membersFailed  byte = 1 // the owner could not read them now: retry
	membersNoGroup byte = 2 // there is no such group
)

// appendMembers encodes a members answer: status, version, the users.
func appendMembers(b []byte, status byte, version int64, users []string) []byte {
	b = append(b, status)
	b = binary.AppendUvarint(b, uint64(version))
	b = binary.AppendUvarint(b, uint64(len(users)))
	for _, u := range users {
		b = link.AppendString(b, u)
	}
	return b
}

func decodeMembers(p []byte) (status byte, version int64, users []string, err error) {
	d := link.NewDecoder(p)
	status = d.Byte()
	version = int64(d.Uvarint())
	n := d.Count()
	users = make([]string, 0, n)
	for i := 0; i < n && d.Err() == nil; i++ {
		users = append(users, d.String())
	}
	return status, version, users, d.Done()
}

// serveMembers answers the members of a group at a version. It reads the
// store, which may take a while: not on the link's reader.
func (r *Router) serveMembers(from link.Peer, p []byte, reply func([]byte)) {
	d := link.NewDecoder(p)
	group := d.String()
	version := int64(d.Uvarint())
	if d.Done() != nil || r.cfg.Store == nil {
		r.log.Warn("bad members request from peer", "peer", from.Name)
		reply(nil)
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		defer cancel()
		got, users, err := r.loadMembers(ctx, group, version)
		switch {
		case errors.Is(err, store.ErrNoGroup):
			reply(appendMembers(nil, membersNoGroup, 0, nil))
		case err != nil:
			r.log.Debug("members not read", "group", group, "err", err)
			reply(appendMembers(nil, membersFailed, 0, nil))
		default:
			reply(appendMembers(nil, membersKnown, got, users))
		}
	}()
}

// changeGroup makes a membership change by c.User (the creator, an admin,
// the member leaving) and delivers its event to the members as of the
// change and to the user it names. It answers ok with the event's offset,
// or ok alone when nothing changed (adding a member).
func (r *Router) changeGroup(ctx context.Context, event string, gc store.GroupChange, skip *client) result {
	gc.Mid, gc.TS = r.newMid(), time.Now().UnixMilli()
	var ch store.Changed
	var err error
	switch event {
	case store.EventCreated:
		ch, err = r.cfg.Store.CreateGroup(ctx, gc)
	case store.EventAdded:
		ch, err = r.cfg.Store.AddMember(ctx, gc)
	case store.EventRemoved:
		ch, err = r.cfg.Store.RemoveMember(ctx, gc)
	default:
		gc.User = gc.By
		ch, err = r.cfg.Store.LeaveGroup(ctx, gc)
	}
	if err != nil {
		return result{err: fmt.Errorf("store: %w", err)}
	}
	if ch.Seq == 0 {
		return result{status: protocol.StatusOK}
	}
	m := protocol.Msg{Mid: gc.Mid, From: gc.By, Group: gc.Group, Event: event, TS: gc.TS, Seq: ch.Seq, Admin: ch.Admin}
	if event != store.EventCreated {
		m.User = gc.User
	}
	var users []string
	if !ch.Gone {
		if users, err = r.membersAt(ctx, gc.Group, ch.Version); err != nil {
			// Stored: the members find the event in the group's stream.
			r.log.Debug("group event not routed", "group", gc.Group, "err", err)
		}
	}
	if m.User != "" && !slices.Contains(users, m.User) {
		users = append(users[:len(users):len(users)], m.User) // the user it names hears of it too
	}
	done := make(chan result, 1)
	frame := protocol.AppendMsg(make([]byte, 0, 160), &m)
	r.deliver(&delivery{users: users, frame: frame, skip: skip, stored: true}, func(res result) { done <- res })
	<-done
	return result{status: protocol.StatusOK, seq: ch.Seq, mid: gc.Mid}
}

// routeGroup delivers a stored group message to its members as of its
// membership version, but the sending connection.
func (r *Router) routeGroup(m protocol.Msg, version int64, sender *client, done func(result)) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	users, err := r.membersAt(ctx, m.Group, version)
	cancel()
	if err != nil {
		// Stored: every member finds it with a sync of the group.
		r.log.Debug("group message not routed", "group", m.Group, "err", err)
		done(result{status: protocol.StatusSent})
		return
	}
	frame := protocol.AppendMsg(make([]byte, 0, 160+len(m.Body)), &m)
	r.deliver(&delivery{users: users, frame: frame, skip: sender, stored: true,
		offline: func(users []string) { r.tellOffline(&m, users...) }}, done)
}

// ChangeGroup makes a membership change for the HTTP API, as the change's
// By: event is store.EventCreated, EventAdded, EventRemoved or EventLeft.
// It returns the event's offset (0 when nothing changed).
func (r *Router) ChangeGroup(ctx context.Context, event string, gc store.GroupChange) (int64, error) {
	if r.cfg.Store == nil {
		return 0, errNeedsStore
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	res := r.changeGroup(ctx, event, gc, nil)
	return res.seq, res.err
}

// Group is a group as it stands, for the HTTP API.
func (r *Router) Group(ctx context.Context, group string) (store.GroupInfo, error) {
	if r.cfg.Store == nil {
		return store.GroupInfo{}, errNeedsStore
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	return r.cfg.Store.Group(ctx, group)
}

// handleGroupChange carries out group_create, group_add, group_remove and
// group_leave.
func (r *Router) handleGroupChange(c *client, f *protocol.Frame, answer func(result)) {
	if r.cfg.Store == nil {
		answer(result{err: errNeedsStore})
		return
	}
	gc := store.GroupChange{Group: f.Group, By: c.User(), User: f.User}
	event := store.EventLeft
	switch f.Type {
	case protocol.TypeGroupCreate:
		event, gc.Members = store.EventCreated, f.Items()
	case protocol.TypeGroupAdd:
		event = store.EventAdded
	case protocol.TypeGroupRemove:
		event = store.EventRemoved
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	answer(r.changeGroup(ctx, event, gc, c))
}

// handleGroupMembers answers a group's members and admins, to a member
// only: one cannot tell a group one is not in from no group.
func (r *Router) handleGroupMembers(c *client, f *protocol.Frame, answer func(result)) {
	info, err := r.Group(context.Background(), f.Group)
	if err != nil {
		answer(result{err: err}) // store.ErrNoGroup is not_member
		return
	}
	members := GroupMembers(info)
	for _, m := range members {
		if m.User == c.User() {
			answer(result{status: protocol.StatusOK, members: members})
			return
		}
	}
	answer(result{err: store.ErrNotMember})
}

// GroupMembers is info's members as the protocol shows them.
func GroupMembers(info store.GroupInfo) []protocol.GroupMember {
	members := make([]protocol.GroupMember, len(info.Members))
	for i, m := range info.Members {
		members[i] = protocol.GroupMember{User: m.User, Admin: m.Admin, Since: m.Since}
	}
	return members
}

// handleSyncGroup writes a page of a group's stream, as its member sees it.
func (r *Router) handleSyncGroup(c *client, f *protocol.Frame, answer func(result)) {
	if r.cfg.Store == nil {
		answer(result{err: errNeedsStore})
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := c.WaitQueue(ctx, c.QueueLimit()/2); err != nil {
		answer(result{err: err})
		return
	}
	msgs, last, more, err := r.cfg.Store.ReadGroup(ctx, c.User(), f.Group, f.After, pageSize(c))
	if err != nil {
		answer(result{err: fmt.Errorf("store: %w", err)})
		return
	}
	sendHistory(c, msgs)
	answer(result{status: protocol.StatusOK, page: true, last: last, more: more})
}
