package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/shardchat/shard/protocol"
)

// Groups are conversations that belong to users, not to connections: the
// members are kept here, and every change to them is an event in the
// group's stream, stored in the transaction that makes the change. The
// offset of the newest such event is the group's membership version, so
// that the members who should get a message are a function of its offset
// (Appended.Version) and a cache of member lists can be keyed by it.
//
// Rules (issue 12), and what it leaves open:
//   - The creator is a member and the admin; CreateGroup of an existing
//     group is ErrConflict. Members besides the creator are not admins.
//   - AddMember and RemoveMember need an admin (ErrForbidden for another
//     member, ErrNotMember for a user who is not one). Adding a member
//     twice changes nothing (Changed.Seq 0, no event); removing a user who
//     is not a member is ErrNotMember; removing oneself is ErrInvalid
//     (that is LeaveGroup).
//   - LeaveGroup: when the last admin leaves, the longest-standing member
//     left (the lowest offset of the event that added it; the first by
//     name among those added together) becomes admin, shown on the `left`
//     event itself (Message.Admin), one event, one offset. When the last
//     member leaves the group is gone: Group and the others say ErrNoGroup.
//   - A gone group's name may be created again. Its stream then goes on
//     from the old one's offsets (the new `created` event follows the
//     old stream's last), so that an offset never names two messages; as
//     no member can read before the event that added it, no one sees the
//     old group's messages, which go by retention as any others.
//   - A member reads the stream from the event that added it (history
//     before one joined is not one's own); added again after a removal,
//     from the new event. A user who is not a member reads nothing
//     (ErrNotMember).
//   - Bounds: Options.MaxGroupMembers members per group (default 1000),
//     MaxUserGroups groups per user, MaxCreateMembers members named by one
//     CreateGroup; past one, ErrTooMany and nothing changes.
type Groups interface {
	// CreateGroup creates c.Group with c.By as its admin and c.Members
	// (duplicates and c.By among them are ignored) as members, and appends
	// the `created` event.
	CreateGroup(ctx context.Context, c GroupChange) (Changed, error)
	// AddMember: c.By, an admin, adds c.User (event `added`).
	AddMember(ctx context.Context, c GroupChange) (Changed, error)
	// RemoveMember: c.By, an admin, removes c.User (event `removed`).
	RemoveMember(ctx context.Context, c GroupChange) (Changed, error)
	// LeaveGroup: c.By leaves (event `left`, with User c.By).
	LeaveGroup(ctx context.Context, c GroupChange) (Changed, error)

	// Group returns the group's members and where its stream stands.
	Group(ctx context.Context, group string) (GroupInfo, error)
	// UserGroups returns the groups user belongs to, by name.
	UserGroups(ctx context.Context, user string) ([]string, error)
	// ReadGroup is Read of the group's stream as member user sees it: from
	// the event that added it (a page after an earlier offset starts
	// there), ErrNotMember for a user who is not a member.
	ReadGroup(ctx context.Context, user, group string, after int64, limit int) (msgs []Message, last int64, more bool, err error)
	// MembersAt returns the members of group as they were at version (a
	// message's Appended.Version): the recipients of that message, even
	// when the group has changed since, by undoing the events after
	// version. ErrTooOld when those are more than MaxUndoEvents entries
	// back or retention has removed some.
	MembersAt(ctx context.Context, group string, version int64) ([]string, error)
}

// GroupChange is a membership change: who makes it, to what, and the
// event's mid and ts, stamped by the node that took the request.
type GroupChange struct {
	Group   string
	By      string   // the creator, the admin, or the member leaving
	User    string   // AddMember, RemoveMember: the member added or removed
	Members []string // CreateGroup: the members besides By
	Mid     string
	TS      int64 // ms since the epoch
}

// Changed is what a change did.
type Changed struct {
	// Seq is the event's offset in the group's stream; 0 when nothing
	// changed (AddMember of a member).
	Seq int64
	// Version is the membership version after the change: Seq, or the
	// version as it was when nothing changed.
	Version int64
	// Admin is, on LeaveGroup, the member who became admin because the
	// last admin left ("" if none did).
	Admin string
	// Gone: the last member left; the group is no more.
	Gone bool
}

// GroupInfo is a group as it stands.
type GroupInfo struct {
	Group   string
	Members []Member // by user id
	// Version is the offset of the newest membership event.
	Version int64
	// Last is the newest offset in the group's stream.
	Last int64
}

// Member is one member of a group.
type Member struct {
	User  string
	Admin bool
	Since int64 // when it was added, ms since the epoch (the event's ts)
	Seq   int64 // the offset of the event that added it
}

// Bounds of groups (issue 12).
const (
	// DefaultMaxGroupMembers is --max-group-members' default.
	DefaultMaxGroupMembers = 1000
	// MaxUserGroups bounds the groups one user belongs to: each is an
	// entry of its conversation list.
	MaxUserGroups = 1000
	// MaxCreateMembers bounds the members one CreateGroup names.
	MaxCreateMembers = 1000
	// MaxUndoEvents bounds the stream entries MembersAt reads back: a
	// router asks for a message it has just stored, a few entries back.
	MaxUndoEvents = 4 * MaxReadLimit
)

// ErrTooOld is MembersAt's answer for a version too far back.
var ErrTooOld = errors.New("store: too old a version to rebuild")

// changeKind is which of the four changes a GroupChange is for.
type changeKind uint8

const (
	changeCreate changeKind = iota
	changeAdd
	changeRemove
	changeLeave
)

func (k changeKind) String() string {
	return [...]string{"create group", "add member", "remove member", "leave group"}[k]
}

// check validates c for kind and, for a create, returns the members to
// add besides c.By: distinct, in name order.
func (c *GroupChange) check(kind changeKind, maxMembers int) ([]string, error) {
	fail := func(what string, err error) ([]string, error) {
		return nil, fmt.Errorf("%s %q: %s: %w", kind, c.Group, what, err)
	}
	switch {
	case !protocol.ValidID(c.Group):
		return fail("malformed group name", ErrInvalid)
	case !protocol.ValidID(c.By):
		return fail(fmt.Sprintf("malformed user %q", c.By), ErrInvalid)
	case c.Mid == "":
		return fail("empty mid", ErrInvalid)
	}
	switch kind {
	case changeAdd, changeRemove:
		if !protocol.ValidID(c.User) {
			return fail(fmt.Sprintf("malformed user %q", c.User), ErrInvalid)
		}
		if kind == changeRemove && c.User == c.By {
			return fail("removing oneself is leaving", ErrInvalid)
		}
	case changeCreate:
		if len(c.Members) > MaxCreateMembers {
			return fail(fmt.Sprintf("%d members named, at most %d", len(c.Members), MaxCreateMembers), ErrTooMany)
		}
		members := make([]string, 0, len(c.Members))
		for _, m := range c.Members {
			if !protocol.ValidID(m) {
				return fail(fmt.Sprintf("malformed member %q", m), ErrInvalid)
			}
			if m != c.By {
				members = append(members, m)
			}
		}
		slices.Sort(members)
		members = slices.Compact(members)
		if len(members)+1 > maxMembers {
			return fail(fmt.Sprintf("%d members, at most %d", len(members)+1, maxMembers), ErrTooMany)
		}
		return members, nil
	}
	return nil, nil
}

// event is the message a change appends to the group's stream.
func (c *GroupChange) event(kind changeKind) Message {
	m := Message{Mid: c.Mid, From: c.By, Group: c.Group, TS: c.TS}
	switch kind {
	case changeCreate:
		m.Event = EventCreated
	case changeAdd:
		m.Event, m.User = EventAdded, c.User
	case changeRemove:
		m.Event, m.User = EventRemoved, c.User
	case changeLeave:
		m.Event, m.User = EventLeft, c.By
	}
	return m
}

// heir is who becomes admin when leaving, an admin, leaves members: no
// one if another admin stays or no member does, else the longest-standing
// member left (the first by id among those added together).
func heir(members []Member, leaving string) string {
	best := -1
	for i, m := range members {
		switch {
		case m.User == leaving:
		case m.Admin:
			return ""
		case best < 0 || m.Seq < members[best].Seq || (m.Seq == members[best].Seq && m.User < members[best].User):
			best = i
		}
	}
	if best < 0 {
		return ""
	}
	return members[best].User
}

func checkGroupName(what, group string) error {
	if !protocol.ValidID(group) {
		return fmt.Errorf("%s %q: malformed group name: %w", what, group, ErrInvalid)
	}
	return nil
}

func checkUser(what, user string) error {
	if !protocol.ValidID(user) {
		return fmt.Errorf("%s: malformed user %q: %w", what, user, ErrInvalid)
	}
	return nil
}

func (f *frontend) CreateGroup(ctx context.Context, c GroupChange) (Changed, error) {
	return f.changeGroup(ctx, changeCreate, c)
}

func (f *frontend) AddMember(ctx context.Context, c GroupChange) (Changed, error) {
	return f.changeGroup(ctx, changeAdd, c)
}

func (f *frontend) RemoveMember(ctx context.Context, c GroupChange) (Changed, error) {
	return f.changeGroup(ctx, changeRemove, c)
}

func (f *frontend) LeaveGroup(ctx context.Context, c GroupChange) (Changed, error) {
	return f.changeGroup(ctx, changeLeave, c)
}

func (f *frontend) changeGroup(ctx context.Context, kind changeKind, c GroupChange) (Changed, error) {
	members, err := c.check(kind, f.opts.MaxGroupMembers)
	if err != nil {
		return Changed{}, err
	}
	if err := f.acquire(); err != nil {
		return Changed{}, err
	}
	defer f.mu.RUnlock()
	return f.e.change(ctx, &changeRequest{kind: kind, c: c, members: members})
}

func (f *frontend) Group(ctx context.Context, group string) (GroupInfo, error) {
	if err := checkGroupName("group", group); err != nil {
		return GroupInfo{}, err
	}
	if err := f.acquire(); err != nil {
		return GroupInfo{}, err
	}
	defer f.mu.RUnlock()
	return f.e.group(ctx, group)
}

func (f *frontend) UserGroups(ctx context.Context, user string) ([]string, error) {
	if err := checkUser("user groups", user); err != nil {
		return nil, err
	}
	if err := f.acquire(); err != nil {
		return nil, err
	}
	defer f.mu.RUnlock()
	return f.e.userGroups(ctx, user)
}

func (f *frontend) ReadGroup(ctx context.Context, user, group string, after int64, limit int) ([]Message, int64, bool, error) {
	limit, err := checkRead(GroupStream(group), limit)
	if err != nil {
		return nil, 0, false, err
	}
	if err := checkUser("read group", user); err != nil {
		return nil, 0, false, err
	}
	if err := f.acquire(); err != nil {
		return nil, 0, false, err
	}
	defer f.mu.RUnlock()
	return f.e.readGroup(ctx, user, group, max(after, 0), limit)
}

// MembersAt takes the members now and undoes, newest first, the events
// after version: an added member goes, a removed or leaving one comes
// back. A group that is gone now has no members, and one made again
// after version had none before its created event.
func (f *frontend) MembersAt(ctx context.Context, group string, version int64) ([]string, error) {
	if err := checkGroupName("members at", group); err != nil {
		return nil, err
	}
	members := make(map[string]bool)
	now := int64(0)
	info, err := f.Group(ctx, group)
	switch {
	case errors.Is(err, ErrNoGroup):
		if _, now, _, err = f.Read(ctx, GroupStream(group), 0, 1); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	default:
		now = info.Version
		for _, m := range info.Members {
			members[m.User] = true
		}
	}
	if now-version > MaxUndoEvents {
		return nil, fmt.Errorf("members of %q at %d, %d entries back: %w", group, version, now-version, ErrTooOld)
	}
	var events []Message
	for after := max(version, 0); after < now; {
		page, _, more, err := f.Read(ctx, GroupStream(group), after, MaxReadLimit)
		if err != nil {
			return nil, err
		}
		if len(page) == 0 || page[0].Seq != after+1 {
			return nil, fmt.Errorf("members of %q at %d: retention removed what followed: %w", group, version, ErrTooOld)
		}
		for _, m := range page {
			if m.Seq > now {
				break
			}
			if m.Event != "" {
				events = append(events, m)
			}
			after = m.Seq
		}
		if !more {
			break
		}
	}
	for _, ev := range slices.Backward(events) {
		switch ev.Event {
		case EventAdded:
			delete(members, ev.User)
		case EventRemoved, EventLeft:
			members[ev.User] = true
		case EventCreated:
			clear(members)
		}
	}
	return slices.Sorted(maps.Keys(members)), nil
}

// changeRequest is a membership change for an engine: the checked
// GroupChange, and for a create its other members, distinct and sorted.
type changeRequest struct {
	kind    changeKind
	c       GroupChange
	members []string
}
