// Package store keeps chat messages durably and gives each one a gap-free
// offset in every stream it is appended to: a user's inbox, a room or a
// group. It also keeps what must outlive connections and nodes: the
// members of each group (decided here, atomically with the group's
// stream), each user's read offset and unread count per conversation,
// and when each user was last seen.
// It never routes, delivers or encodes a frame: the router does, with the
// offsets, versions and counts that the store returns.
//
// Two engines sit behind one interface: an embedded one for a single node
// (`shard --data DIR`, see embedded.go) and PostgreSQL for a cluster whose
// nodes share one database (`--store postgres://...`, see postgres.go).
// Open picks one by its URL. storetest.Run is the conformance suite both
// pass.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/shardchat/shard/protocol"
)

// StreamKind says whose stream it is.
type StreamKind uint8

const (
	KindInbox StreamKind = iota // a user's direct messages, received and sent
	KindRoom                    // a room's messages
	KindGroup                   // a group's messages and membership events
)

// Stream is one ordered log of messages. Inboxes, rooms and groups are
// separate name spaces: a user, a room and a group may share a name.
type Stream struct {
	Kind StreamKind
	Name string
}

// Inbox is the stream of user's direct messages, both received and sent.
func Inbox(user string) Stream { return Stream{Kind: KindInbox, Name: user} }

// RoomStream is the stream of room's messages.
func RoomStream(room string) Stream { return Stream{Kind: KindRoom, Name: room} }

// GroupStream is the stream of group's messages and membership events.
func GroupStream(group string) Stream { return Stream{Kind: KindGroup, Name: group} }

func (s Stream) String() string {
	switch s.Kind {
	case KindRoom:
		return "room:" + s.Name
	case KindGroup:
		return "group:" + s.Name
	}
	return "inbox:" + s.Name
}

// Group events, the Event of a message that records a membership change.
const (
	EventCreated = "created" // From created the group (offset 1 of a new name)
	EventAdded   = "added"   // From, an admin, added User
	EventRemoved = "removed" // From, an admin, removed User
	EventLeft    = "left"    // From (= User) left; Admin names who became admin, if anyone
)

// Message is a stored message as a reader of one stream sees it.
type Message struct {
	Stream Stream
	Seq    int64 // its offset in Stream: 1, 2, 3, ...

	// As in the `msg` frame: exactly one of To, Room and Group is set.
	Mid, From, To, Room, Group, Body string
	TS                               int64 // ms since the epoch

	// Event is set on a group's membership change (EventCreated, ...),
	// which has no Body; User is the member it names (added, removed,
	// left), and Admin, on EventLeft, the member who became admin because
	// the last admin left.
	Event, User, Admin string
}

// Append is a message to store. Exactly one of To, Room and Group is set.
type Append struct {
	Mid, From, To, Room, Group, Body string
	TS                               int64 // ms since the epoch, stamped by the sender's node

	// Key is From's optional idempotency key (the syntax of an id). The same
	// Key from the same From within Options.KeyWindow stores nothing and
	// returns the first append's result.
	Key string

	// NoSenderCopy leaves a direct message out of From's inbox: for senders
	// that are not users, such as the HTTP API's.
	NoSenderCopy bool
}

// Appended is the result of an Append.
type Appended struct {
	// Seq is the message's offset in To's inbox for a direct message, in the
	// room's or group's stream otherwise: the `seq` of the `msg` frame its
	// recipients get.
	Seq int64
	// SenderSeq is its offset in From's inbox (the copy for the sender's
	// other devices and history); 0 for a room or group message, a message
	// to oneself, or NoSenderCopy.
	SenderSeq int64
	// Version, for a group message, is the group's membership version at
	// Seq: the offset of the newest membership event before it. Its
	// recipients are exactly the members as of that event, so a member
	// list cached by version is right for it (a message racing a removal
	// is either before the removal's offset, with the older version and
	// the removed member among its recipients, or after it, without).
	// Group gives the members at the newest version, MembersAt at any.
	Version int64

	// Duplicate: Key was seen from From within the window. Nothing was
	// stored now; Seq, SenderSeq, Version, Mid and TS are the first
	// append's.
	Duplicate bool
	Mid       string
	TS        int64
	// Answer is, for a duplicate, what RecordAnswers recorded for the first
	// append; nil when nothing was recorded (yet).
	Answer *Answer
}

// Answer is the ack a sender got for a keyed message, so that a resend can
// be answered alike.
type Answer struct {
	Status     string
	Recipients int
}

// KeyedAnswer is the answer given to From's append with Key.
type KeyedAnswer struct {
	From, Key string
	Answer
}

// Store is a message store. Its methods are safe for concurrent use.
type Store interface {
	// Append stores a in every stream it belongs to, atomically: all or
	// none. A direct message goes to To's inbox and to From's (unless From
	// == To or NoSenderCopy); a room message to the room's stream; a group
	// message to the group's stream, if From is a member at that offset
	// (checked in the same transaction: ErrNoGroup, ErrNotMember). Sending
	// marks the conversation read up to the message (see SetRead). It
	// returns once the message is durable. An error does not prove that
	// nothing was stored (the commit may have landed as ctx ended): a retry
	// with the same Key is safe.
	Append(ctx context.Context, a Append) (Appended, error)

	// RecordAnswers records the answers given to keyed appends, for
	// duplicates to return, in one commit (or a few, when the committer
	// takes them apart). An answer whose key is unknown or past its window
	// is ignored.
	RecordAnswers(ctx context.Context, answers []KeyedAnswer) error

	// Read returns up to limit messages of s with an offset above after, in
	// order (after 0 starts at the oldest kept). last is the newest offset
	// ever given in s (0 for a stream never written), more whether messages
	// follow the page. limit is capped at MaxReadLimit and must be >= 1.
	// Retention may have removed the oldest messages: the first offset
	// returned can then be above after+1. A group's stream is read whole:
	// that is the API's view; a member reads it with ReadGroup.
	Read(ctx context.Context, s Stream, after int64, limit int) (msgs []Message, last int64, more bool, err error)

	// Trim runs retention now (Options.MaxPerStream, MaxAge, and the expiry
	// of idempotency keys past their window) until nothing is left to
	// remove, in small steps that appends interleave with, and returns how
	// much it removed. The store calls it every Options.TrimInterval by
	// itself; tests and tools may call it directly. Unread counts stay
	// right: a removed message is no longer unread.
	Trim(ctx context.Context) (removed int, err error)

	// Health says whether the store can take writes now, as its last
	// write or its last probe (every second) found.
	Health() Health

	Groups
	ReadState
	Presence

	// Close stops the background work, waits for appends under way, and
	// closes the engine. Methods called after Close return ErrClosed.
	Close() error
}

// Options tune a store. The zero value is usable: keep everything, the
// default key window and trim interval.
type Options struct {
	// MaxPerStream keeps at most this many newest messages per stream;
	// 0 keeps all. Offsets of the messages kept never change.
	MaxPerStream int
	// MaxAge removes messages whose ts is older than this; 0 keeps all.
	MaxAge time.Duration

	// MaxGroupMembers bounds the members of one group (issue 12,
	// --max-group-members). Default DefaultMaxGroupMembers.
	MaxGroupMembers int

	// KeyWindow is how long an idempotency key deduplicates. Default 5
	// minutes (the protocol's promise); tests shorten it.
	KeyWindow time.Duration
	// TrimInterval is how often retention runs in the background. Default
	// 30s; negative: never (Trim only when called).
	TrimInterval time.Duration
	// MaxBatch bounds how many appends commit in one transaction (group
	// commit: appends waiting while a commit runs go together in the next).
	// Default 256; 1 commits each append on its own.
	MaxBatch int
	// Now is the clock for key windows and age retention. Default time.Now.
	Now func() time.Time

	// DiskReserve is the free space the embedded engine keeps on its disk:
	// below it, writes are refused (ErrFull) until space returns, and half
	// of it is held as a ballast file for what fills the disk anyway
	// (diskguard.go). Default DefaultDiskReserve; negative: no refusal,
	// only the ballast (tests). PostgreSQL ignores it.
	DiskReserve int64
	// diskBallast overrides the ballast's size (tests).
	diskBallast int64

	Logger *slog.Logger
}

// Defaults and bounds.
const (
	// DefaultKeyWindow is the protocol's deduplication window (issue 7).
	DefaultKeyWindow = 5 * time.Minute
	// DefaultTrimInterval: retention is a matter of hours or days, and a
	// pass over many streams is not free.
	DefaultTrimInterval = 30 * time.Second
	// DefaultMaxBatch: 256 appends of about 1 KiB is a 256 KiB commit,
	// past which a bigger group buys no fewer syncs worth having.
	DefaultMaxBatch = 256
	// DefaultDiskReserve: a full memtable's flush (Pebble's default 4 MiB
	// memtables, growing to 64 MiB) and the WAL it comes from fit in it,
	// with its ballast of 32 MiB on top; on a disk of gigabytes it is
	// nothing.
	DefaultDiskReserve = 64 << 20
	// MaxReadLimit caps one Read page: well under the 1024 frames of the
	// default --send-queue, so that a page never trips the slow-consumer
	// limit on its own.
	MaxReadLimit = 500
	// trimStep bounds the rows one retention step removes or examines: a
	// step is one transaction, and appends wait for it at most that long.
	trimStep = 512
	// queueLen bounds the appends waiting for a commit on one node; past it
	// Append waits (for ctx) for room: back-pressure, never a drop.
	queueLen = 4096
)

// Errors. Each has an error code for the client (docs/protocol.md §4.7
// and issue 12's forbidden and conflict): ErrInvalid and ErrTooMany
// are bad_request, ErrNotMember not_member (and so is ErrNoGroup, unless
// the router tells an unknown group apart), ErrForbidden forbidden,
// ErrConflict conflict.
var (
	ErrClosed    = errors.New("store: closed")
	ErrInvalid   = errors.New("store: invalid argument")
	ErrNoGroup   = errors.New("store: no such group")
	ErrNotMember = errors.New("store: not a member of the group")
	ErrForbidden = errors.New("store: only an admin of the group may do that")
	ErrConflict  = errors.New("store: the group exists")
	ErrTooMany   = errors.New("store: past a bound")
)

func (o Options) withDefaults() Options {
	if o.KeyWindow <= 0 {
		o.KeyWindow = DefaultKeyWindow
	}
	if o.TrimInterval == 0 {
		o.TrimInterval = DefaultTrimInterval
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.MaxGroupMembers <= 0 {
		o.MaxGroupMembers = DefaultMaxGroupMembers
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.DiskReserve == 0 {
		o.DiskReserve = DefaultDiskReserve
	}
	if o.diskBallast == 0 {
		o.diskBallast = max(o.DiskReserve, 0) / 2
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Open opens the store that url names:
//
//   - "postgres://..." or "postgresql://...": PostgreSQL, shared by every
//     node of a cluster. The URL is pgx's (pgxpool): pool_max_conns and
//     other pool settings may be given as query parameters. Open creates or
//     migrates the schema.
//   - "file:DIR" or a directory path: the embedded engine, for one process.
//     DIR is created if missing.
func Open(ctx context.Context, url string, opts Options) (Store, error) {
	opts = opts.withDefaults()
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		return openPostgres(ctx, url, opts)
	case strings.HasPrefix(url, "file:"):
		return openEmbedded(filepath.Clean(strings.TrimPrefix(url, "file:")), opts)
	case url == "" || strings.Contains(url, "://"):
		return nil, fmt.Errorf("store %q: want postgres://..., file:DIR or a directory: %w", url, ErrInvalid)
	}
	return openEmbedded(filepath.Clean(url), opts)
}

// check validates an append: the ids as the protocol defines them, exactly
// one of To, Room and Group, a body.
func (a *Append) check() error {
	named := 0
	for _, n := range [...]string{a.To, a.Room, a.Group} {
		if n != "" {
			named++
			if !protocol.ValidID(n) {
				return fmt.Errorf("append: to %q room %q group %q: %w", a.To, a.Room, a.Group, ErrInvalid)
			}
		}
	}
	switch {
	case a.Mid == "":
		return fmt.Errorf("append: empty mid: %w", ErrInvalid)
	case !protocol.ValidID(a.From):
		return fmt.Errorf("append: from %q: %w", a.From, ErrInvalid)
	case named != 1:
		return fmt.Errorf("append: want exactly one of to, room and group: %w", ErrInvalid)
	case a.Key != "" && !protocol.ValidID(a.Key):
		return fmt.Errorf("append: key %q: %w", a.Key, ErrInvalid)
	case a.Body == "":
		return fmt.Errorf("append: empty body: %w", ErrInvalid)
	}
	return nil
}

// streams lists the streams a goes to: the first is the one Seq names, the
// second (if any) the sender's inbox.
func (a *Append) streams() (first Stream, sender Stream, copy bool) {
	switch {
	case a.Room != "":
		return RoomStream(a.Room), Stream{}, false
	case a.Group != "":
		return GroupStream(a.Group), Stream{}, false
	}
	return Inbox(a.To), Inbox(a.From), a.From != a.To && !a.NoSenderCopy
}

func checkRead(s Stream, limit int) (int, error) {
	if !protocol.ValidID(s.Name) || s.Kind > KindGroup {
		return 0, fmt.Errorf("read %s: %w", s, ErrInvalid)
	}
	if limit < 1 {
		return 0, fmt.Errorf("read %s: limit %d: %w", s, limit, ErrInvalid)
	}
	return min(limit, MaxReadLimit), nil
}
