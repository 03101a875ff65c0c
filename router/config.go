package router

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/shardchat/shard/store"
)

// Mode is how a node finds the nodes that hold a message's recipients.
type Mode int

const (
	// Owner asks the key's owner node (or a cached answer) and sends one
	// node-to-node message to each node that holds a recipient.
	Owner Mode = iota
	// Broadcast sends every message to every other node, as the design this
	// project replaces did. It exists only to measure the difference.
	Broadcast
)

// ParseMode reads the --routing flag.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "owner":
		return Owner, nil
	case "broadcast":
		return Broadcast, nil
	}
	return 0, fmt.Errorf("routing %q: want owner or broadcast", s)
}

func (m Mode) String() string {
	if m == Broadcast {
		return "broadcast"
	}
	return "owner"
}

// Config describes one node's router.
type Config struct {
	// Self is this node's name, as in the ring.
	Self string
	// Incarnation is random per process start; it travels in the link
	// hello so that owners tell this process from a former one.
	Incarnation string
	// Mode is owner (default) or broadcast routing.
	Mode Mode
	// CacheTTL bounds how long a sender trusts a cached location without
	// hearing from the owner. Default DefaultCacheTTL; owners remember the
	// watcher a little longer (watchSlack), so a change is never missed.
	CacheTTL time.Duration
	// CacheSize bounds the sender-side location cache. Default
	// DefaultCacheSize keys.
	CacheSize int
	// MaxRooms bounds the rooms one connection may have joined at once, so
	// that a client cannot grow the room index without bound. Default
	// DefaultMaxRooms.
	MaxRooms int
	// MaxWatch bounds the users one connection watches at once
	// (--max-watch, docs/protocol.md §3.8). Default DefaultMaxWatch.
	MaxWatch int
	// StoreRate bounds the bytes one user may have stored per second
	// through this node (quota.go), with a bucket of StoreBurst bytes; 0:
	// no bound. Messages from the HTTP API are not counted.
	StoreRate, StoreBurst int
	// Store keeps messages; nil: live delivery only, at most once.
	Store store.Store
	// Offline, when set, is told of every stored message that reached no
	// connection of a recipient (offline.go). It must not block.
	Offline func(OfflineMessage)
	Logger  *slog.Logger
	Metrics *Metrics
}

// Defaults of Config.
const (
	// DefaultCacheTTL: an owner whose word of a change was lost (its link
	// broke) is trusted at most this long; short enough that a stale route
	// heals on its own, long enough that a busy sender asks each owner
	// about a key about once per 30 s, not per message.
	DefaultCacheTTL = 30 * time.Second
	// DefaultCacheSize: 100,000 keys of about 100 bytes is 10 MB, the
	// recipients a busy node talks to in 30 s many times over.
	DefaultCacheSize = 100000
	// DefaultMaxRooms (the --max-rooms default): more than any chat client
	// shows at once, and 256 directory entries per connection at most.
	DefaultMaxRooms = 256
	// DefaultMaxWatch (the --max-watch default) is issue 13's: a contact
	// list of a thousand users, in one watch frame.
	DefaultMaxWatch = 1000
)

func (c Config) withDefaults() Config {
	if c.CacheTTL <= 0 {
		c.CacheTTL = DefaultCacheTTL
	}
	if c.CacheSize <= 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.MaxRooms <= 0 {
		c.MaxRooms = DefaultMaxRooms
	}
	if c.MaxWatch <= 0 {
		c.MaxWatch = DefaultMaxWatch
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// watchSlack is how much longer an owner keeps a watcher than the watcher
// keeps its cache entry, so that no change goes untold.
const watchSlack = 5 * time.Second

// settleWait bounds how long a sender retries a lookup that the cluster
// cannot answer yet (the owner is still rebuilding its directory, or the
// owner just died) before it answers `unavailable`.
const settleWait = 2 * time.Second

// attachWait bounds how long a new connection waits for its owner: longer
// than crash detection (about 2.5 s on loopback) and the settling after it.
const attachWait = 5 * time.Second
