// Package node wires one shard node together: listeners, gossip, router,
// sessions, the HTTP API and the drain. Only cmd/shard, tests and bench use it.
package node

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/shardchat/shard/router"
	"github.com/shardchat/shard/session"
)

// Config is one node's configuration: the flags of the README's Configuration
// table (the bounds among them: docs/protocol.md §11).
type Config struct {
	// Name must be unique in the cluster. Default: "shard-" + the http
	// host and port, which is unique on one machine.
	Name string
	// HTTP is the client listener: WebSocket, page, API. Default
	// 127.0.0.1:8080; port 0 picks a free port.
	HTTP string
	// Gossip is the memberlist bind address (TCP and UDP). Default
	// 127.0.0.1:7946; port 0 picks a free port.
	Gossip string
	// Join lists gossip addresses of existing members; empty starts a new
	// cluster.
	Join []string
	// JoinTimeout bounds the retries of Join. Default 30s.
	JoinTimeout time.Duration
	// Advertise is the gossip address others should use, when it differs.
	Advertise string
	// Link is the node-to-node data-plane address. Default: the gossip
	// host, port+1 (port 0 stays 0).
	Link string
	// Routing is owner (default) or broadcast.
	Routing router.Mode
	// ClusterKey encrypts gossip, and authenticates and encrypts links; all
	// nodes agree. Empty: links are let in from current members only, by
	// name, incarnation and address, and the node refuses to start on a
	// non-loopback gossip or link address unless Insecure is set.
	ClusterKey string
	// Insecure lets a node without ClusterKey start on a non-loopback gossip
	// or link address (a network where every host is trusted); it logs a
	// warning at every start.
	Insecure bool
	// AuthSecret is the HS256 secret of client tokens; empty is development
	// mode, where the user id comes from the query string.
	AuthSecret string
	// APIKey guards POST /api/send; empty disables it.
	APIKey string
	// Session holds the per-connection limits.
	Session session.Config
	// MaxRooms bounds the rooms one connection may have joined at once.
	// Default router.DefaultMaxRooms.
	MaxRooms int
	// DrainTimeout bounds a graceful shutdown. Default 10s.
	DrainTimeout time.Duration
	// Origins lists the browser origins (scheme://host[:port]) allowed to
	// open a WebSocket; "*" allows any. Empty: same origin only, the Origin
	// must name the host the request was sent to. Requests without an
	// Origin (non-browser clients) are always allowed.
	Origins []string
	// MaxConns caps the client connections of this node; past it upgrades
	// are refused with 503. Default 50000.
	MaxConns int
	// Data is a directory for the embedded message store (one node). Store
	// wins when both are set. Neither: no store, live delivery only.
	Data string
	// Store is the URL of a shared message store (postgres://...) that
	// every node of a cluster uses.
	Store string
	// MaxGroupMembers bounds the members of one group. Default
	// store.DefaultMaxGroupMembers.
	MaxGroupMembers int
	// Webhook, when set, is the URL the node POSTs an offline push to for
	// every message stored for a recipient with no connection
	// (node/webhook.go). It needs a store.
	Webhook string
	// WebhookSecret signs each push (HMAC-SHA256 of the body).
	WebhookSecret string
	// WebhookBackoff is the first wait before a push is tried again; it
	// doubles, with jitter. Default DefaultWebhookBackoff.
	WebhookBackoff time.Duration
	// RetainCount keeps at most this many messages per stream; 0: all.
	RetainCount int
	// RetainAge removes messages older than this; 0: keep.
	RetainAge time.Duration
	// Pprof, when set, serves net/http/pprof on this address (keep it on
	// loopback: it exposes the process). Default empty: off.
	Pprof string
	// HandshakeTimeout bounds reading an HTTP request, the WebSocket
	// upgrade included: a half-open handshake is dropped after it.
	// Default 5s.
	HandshakeTimeout time.Duration
	Logger           *slog.Logger
}

// Defaults of the flags, as the README's Configuration table gives them.
const (
	DefaultHTTP         = "127.0.0.1:8080"
	DefaultGossip       = "127.0.0.1:7946"
	DefaultJoinTimeout  = 30 * time.Second
	DefaultDrainTimeout = 10 * time.Second
	DefaultMaxConns     = 50000
	DefaultHandshake    = 5 * time.Second
)

func (c Config) withDefaults() Config {
	if c.HTTP == "" {
		c.HTTP = DefaultHTTP
	}
	if c.Gossip == "" {
		c.Gossip = DefaultGossip
	}
	if c.JoinTimeout <= 0 {
		c.JoinTimeout = DefaultJoinTimeout
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshake
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Session = c.Session.WithDefaults()
	return c
}

// linkAddr derives the link address from the gossip address: same host,
// next port.
func linkAddr(gossip string) (string, error) {
	host, port, err := net.SplitHostPort(gossip)
	if err != nil {
		return "", fmt.Errorf("gossip address %q: %w", gossip, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", fmt.Errorf("gossip address %q: bad port", gossip)
	}
	if p != 0 {
		p++
	}
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}
