// Package node wires one shard node together: listeners, gossip, router,
// sessions, the HTTP API and the drain. Only cmd/shard, tests and bench use it.
package node

import (
	"errors"
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
	// MaxTokenAge caps how long a token may let its holder in: a token whose
	// exp is further than this from now, or from its iat, is refused.
	// Default DefaultMaxTokenAge.
	MaxTokenAge time.Duration
	// TokenAudience, when set, must be among a token's aud.
	TokenAudience string
	// TokenIssuer, when set, must be a token's iss.
	TokenIssuer string
	// APIKey guards POST /api/send and the history; empty disables them.
	APIKey string
	// PrivateAPI puts where users and rooms are (/api/users/{id},
	// /api/rooms/{room}), the cluster (/api/cluster) and /metrics behind
	// APIKey too; without APIKey they are off.
	PrivateAPI bool
	// Session holds the per-connection limits.
	Session session.Config
	// MaxRooms bounds the rooms one connection may have joined at once.
	// Default router.DefaultMaxRooms.
	MaxRooms int
	// MaxWatch bounds the users one connection watches at once (presence).
	// Default router.DefaultMaxWatch.
	MaxWatch int
	// DrainTimeout bounds a graceful shutdown. Default 10s.
	DrainTimeout time.Duration
	// Origins lists the browser origins (scheme://host[:port]) allowed to
	// open a WebSocket; "*" allows any. Empty: same origin only, the Origin
	// must name the host the request was sent to. Requests without an
	// Origin (non-browser clients) are always allowed.
	Origins []string
	// PublicURL is the address users reach the chat at
	// (https://chat.example/): when set, a browser's Origin must be its
	// scheme, host and port, or one of Origins.
	PublicURL string
	// MaxConns caps the client connections of this node; past it upgrades
	// are refused with 503. Default 50000.
	MaxConns int
	// MaxConnsPerUser caps the connections one user may hold on this node;
	// past it upgrades are refused with 429. It is a per-node bound: a user
	// may hold as many on each node. Default DefaultMaxConnsPerUser.
	MaxConnsPerUser int
	// MaxConnsPerIP caps the connections from one client address (an IPv6
	// client's /64) on this node; past it upgrades are refused with 429.
	// Default 0: no cap (behind a proxy that is not in TrustedProxies every
	// client has the proxy's address).
	MaxConnsPerIP int
	// TrustedProxies lists the CIDRs (or addresses) of the proxies in front
	// of the node: from them, the client's address is the last of
	// X-Forwarded-For that is not a trusted proxy. From anyone else the
	// header is ignored.
	TrustedProxies []string
	// Data is a directory for the embedded message store (one node). Store
	// wins when both are set. Neither: no store, live delivery only.
	Data string
	// Store is the URL of a shared message store (postgres://...) that
	// every node of a cluster uses.
	Store string
	// StoreRate bounds the bytes one user may have stored per second through
	// this node (each copy's body and 128 bytes for the rest of its row), as
	// a token bucket holding 10 s of it, or the largest message when that is
	// more (router.StoreBucket). Default DefaultStoreRate.
	StoreRate int
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
	// upgrade included: a half-open handshake is dropped after it, and a
	// keep-alive connection idle for as long is closed. Default 5s.
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
	// DefaultMaxConnsPerUser: a person's phone, laptop and a few dozen
	// tabs; one message to a user is written this many times per node at
	// most.
	DefaultMaxConnsPerUser = 32
	DefaultHandshake       = 5 * time.Second
	// DefaultMaxTokenAge: a day, the longest sign-in most chat apps keep
	// without asking their auth server again.
	DefaultMaxTokenAge = 24 * time.Hour
	// DefaultStoreRate: 64 KiB a second per user, a largest frame each
	// second or several hundred typed messages, far above what a person
	// writes; 5.4 GiB a day at most, which retention (RetainAge,
	// RetainCount) must then bound.
	DefaultStoreRate = 64 << 10
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
	if c.MaxConnsPerUser <= 0 {
		c.MaxConnsPerUser = DefaultMaxConnsPerUser
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshake
	}
	if c.StoreRate <= 0 {
		c.StoreRate = DefaultStoreRate
	}
	if c.MaxTokenAge <= 0 {
		c.MaxTokenAge = DefaultMaxTokenAge
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Session = c.Session.WithDefaults()
	return c
}

// Validate reports the first value of c that no node could start with: a
// --public-url that is not an http or https URL, a --trusted-proxies entry
// that is not a CIDR or an address, --private-api without --api-key.
func (c Config) Validate() error {
	if c.PublicURL != "" {
		if _, err := parseOrigin(c.PublicURL); err != nil {
			return fmt.Errorf("public-url: %w", err)
		}
	}
	if _, err := parseTrustedProxies(c.TrustedProxies); err != nil {
		return fmt.Errorf("trusted-proxies: %w", err)
	}
	if c.PrivateAPI && c.APIKey == "" {
		return errors.New("private-api needs an api-key: without one the private endpoints would answer no one")
	}
	return nil
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
