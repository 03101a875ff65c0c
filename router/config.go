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
	// hearing from the owner. Default 30s; owners remember the watcher a
	// little longer, so a change is never missed.
	CacheTTL time.Duration
	// CacheSize bounds the sender-side location cache. Default 100000 keys.
	CacheSize int
	// Store keeps messages; nil: live delivery only, at most once.
	Store   store.Store
	Logger  *slog.Logger
	Metrics *Metrics
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
