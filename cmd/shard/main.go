// Command shard runs one node of the shard chat cluster. Every flag can also
// come from the environment as SHARD_<FLAG>; a flag on the command line wins.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/shardchat/shard/node"
	"github.com/shardchat/shard/router"
	"github.com/shardchat/shard/session"
	"github.com/shardchat/shard/store"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run returns the exit code the README gives (Configuration, and
// docs/protocol.md §10.2 for the drain): 0 after a clean drain, 1 for
// a drain cut short or a failed start, 2 for bad flags.
func run(args []string, stderr io.Writer) int {
	cfg, level, err := parseFlags(args, os.LookupEnv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "shard: %v\n", err)
		return 2
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg.Logger = logger

	n, err := node.Start(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "shard: %v\n", err)
		return 1
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	sig := <-signals
	logger.Info("signal received, draining", "node", n.Name(), "signal", sig.String())
	if err := n.Drain(); err != nil {
		logger.Error("drain cut short", "node", n.Name(), "err", err)
		return 1
	}
	return 0
}

// parseFlags reads the flags of the README's Configuration table, each with
// its SHARD_<FLAG> environment fallback.
func parseFlags(args []string, env func(string) (string, bool), stderr io.Writer) (node.Config, slog.Level, error) {
	fs := flag.NewFlagSet("shard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg      node.Config
		join     string
		routing  string
		logLevel string
		origins  string
		proxies  string
	)
	fs.StringVar(&cfg.Name, "name", "", "node name, unique in the cluster (default: derived from the http host and port)")
	fs.StringVar(&cfg.HTTP, "http", node.DefaultHTTP, "client listener: WebSocket, chat page, HTTP API")
	fs.StringVar(&cfg.Gossip, "gossip", node.DefaultGossip, "memberlist bind address (TCP and UDP)")
	fs.StringVar(&join, "join", "", "comma-separated gossip addresses of existing members; empty starts a new cluster")
	fs.DurationVar(&cfg.JoinTimeout, "join-timeout", node.DefaultJoinTimeout, "how long --join is retried before giving up")
	fs.StringVar(&cfg.Advertise, "advertise", "", "gossip address others should use, when it differs from --gossip")
	fs.StringVar(&cfg.Link, "link", "", "node-to-node data-plane address (default: gossip host, gossip port + 1)")
	fs.StringVar(&routing, "routing", "owner", "owner, or broadcast (the older design, for benchmarks only)")
	fs.StringVar(&cfg.ClusterKey, "cluster-key", "", "shared secret: encrypts gossip, authenticates and encrypts node-to-node links")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "allow a non-loopback --gossip or --link without --cluster-key (a trusted network); logs a warning at every start")
	fs.StringVar(&cfg.AuthSecret, "auth-secret", "", "HMAC secret of client tokens (JWT HS256, sub = user id); empty: user id from the query string")
	fs.DurationVar(&cfg.MaxTokenAge, "max-token-age", node.DefaultMaxTokenAge, "longest a token may let its holder in: its exp at most this far from now and from its iat")
	fs.StringVar(&cfg.TokenAudience, "token-aud", "", "when set, a token's aud must include it")
	fs.StringVar(&cfg.TokenIssuer, "token-iss", "", "when set, a token's iss must be it")
	fs.StringVar(&cfg.APIKey, "api-key", "", "bearer key for POST /api/send and the history; empty disables them")
	fs.BoolVar(&cfg.PrivateAPI, "private-api", false, "put /api/users/{id}, /api/rooms/{room}, /api/cluster and /metrics behind --api-key too")
	fs.StringVar(&cfg.Webhook, "webhook", "", "URL to POST an offline push to for each message stored for a recipient with no connection (needs a store)")
	fs.StringVar(&cfg.WebhookSecret, "webhook-secret", "", "HMAC-SHA256 secret that signs each push (header "+node.WebhookSignatureHeader+")")
	fs.IntVar(&cfg.Session.MaxFrame, "max-frame", session.DefaultMaxFrame, "largest client frame in bytes")
	fs.IntVar(&cfg.Session.Rate, "rate", session.DefaultRate, "client frames (messages, pings, pongs) per second per connection (burst twice that)")
	fs.IntVar(&cfg.Session.SendQueue, "send-queue", session.DefaultSendQueue, "outgoing frames a connection may have waiting before it is closed as a slow consumer")
	fs.DurationVar(&cfg.Session.PingInterval, "ping-interval", session.DefaultPingInterval, "server ping period; silence for twice as long closes a connection")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", node.DefaultDrainTimeout, "longest a graceful shutdown may take")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&origins, "origins", "", "comma-separated browser origins allowed to connect (scheme://host[:port], or *); empty: same origin only")
	fs.StringVar(&cfg.PublicURL, "public-url", "", "the URL users reach the chat at (https://chat.example/): a browser's origin must be its scheme, host and port, or one of --origins")
	fs.IntVar(&cfg.MaxConns, "max-conns", node.DefaultMaxConns, "client connections this node accepts; past it upgrades get 503")
	fs.IntVar(&cfg.MaxConnsPerUser, "max-conns-per-user", node.DefaultMaxConnsPerUser, "connections one user may hold on this node; past it upgrades get 429")
	fs.IntVar(&cfg.MaxConnsPerIP, "max-conns-per-ip", 0, "connections from one client address (an IPv6 /64) on this node; past it upgrades get 429; 0: no cap")
	fs.StringVar(&proxies, "trusted-proxies", "", "comma-separated CIDRs of the proxies in front of the nodes, whose X-Forwarded-For names the client")
	fs.IntVar(&cfg.MaxRooms, "max-rooms", router.DefaultMaxRooms, "rooms one connection may have joined at once")
	fs.IntVar(&cfg.MaxGroupMembers, "max-group-members", store.DefaultMaxGroupMembers, "members one group may have (with a message store)")
	fs.IntVar(&cfg.MaxWatch, "max-watch", router.DefaultMaxWatch, "users one connection may watch at once (presence)")
	fs.StringVar(&cfg.Data, "data", "", "directory of the embedded message store (one node): history, offline messages, sync")
	fs.StringVar(&cfg.Store, "store", "", "URL of the message store every node shares (postgres://...); wins over --data")
	fs.IntVar(&cfg.StoreRate, "store-rate", node.DefaultStoreRate, "bytes one user may have stored per second through this node (bucket of 10 s); past it sends get rate_limited")
	fs.IntVar(&cfg.RetainCount, "retain-count", 0, "messages kept per inbox or room stream; 0: all")
	fs.DurationVar(&cfg.RetainAge, "retain-age", 0, "messages older than this are removed; 0: kept")
	fs.StringVar(&cfg.Pprof, "pprof", "", "serve Go's profiler (net/http/pprof) on this address; keep it on loopback; empty: off")
	fs.DurationVar(&cfg.HandshakeTimeout, "handshake-timeout", node.DefaultHandshake, "longest an HTTP request or WebSocket handshake may take to arrive")

	// The environment fills what the command line does not set.
	set := map[string]bool{}
	if err := fs.Parse(args); err != nil {
		return cfg, 0, err
	}
	if fs.NArg() > 0 {
		return cfg, 0, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || envErr != nil {
			return
		}
		name := "SHARD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := env(name); ok {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s=%q: %v", name, v, err)
			}
		}
	})
	if envErr != nil {
		return cfg, 0, envErr
	}

	cfg.Join = splitList(join)
	cfg.Origins = splitList(origins)
	cfg.TrustedProxies = splitList(proxies)
	var err error
	if cfg.Routing, err = router.ParseMode(routing); err != nil {
		return cfg, 0, err
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return cfg, 0, fmt.Errorf("log-level %q: want debug, info, warn or error", logLevel)
	}
	for name, v := range map[string]int{"max-frame": cfg.Session.MaxFrame, "rate": cfg.Session.Rate, "send-queue": cfg.Session.SendQueue,
		"max-conns": cfg.MaxConns, "max-rooms": cfg.MaxRooms, "max-group-members": cfg.MaxGroupMembers,
		"max-watch": cfg.MaxWatch, "max-conns-per-user": cfg.MaxConnsPerUser, "store-rate": cfg.StoreRate} {
		if v <= 0 {
			return cfg, 0, fmt.Errorf("%s must be positive, got %d", name, v)
		}
	}
	for name, v := range map[string]time.Duration{"ping-interval": cfg.Session.PingInterval, "drain-timeout": cfg.DrainTimeout,
		"join-timeout": cfg.JoinTimeout, "handshake-timeout": cfg.HandshakeTimeout, "max-token-age": cfg.MaxTokenAge} {
		if v <= 0 {
			return cfg, 0, fmt.Errorf("%s must be positive, got %s", name, v)
		}
	}
	if cfg.MaxConnsPerIP < 0 {
		return cfg, 0, fmt.Errorf("max-conns-per-ip must be 0 (no cap) or positive, got %d", cfg.MaxConnsPerIP)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, 0, err
	}
	return cfg, level, nil
}

// splitList reads a comma-separated flag, spaces and empty items dropped.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
