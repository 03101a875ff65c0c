package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config is everything the command line says.
type Config struct {
	// Cluster: bench starts Nodes local nodes, or targets URLs.
	Nodes      int
	Routing    string
	ShardBin   string
	NodeArgs   []string
	NodeEnv    []string // NAME=VALUE for every local node's environment
	URLs       []string
	MetricsURL []string
	Sizes      []int
	// Baseline: also run the workload against the echo server (echo.go).
	Baseline bool

	// Workload.
	Users        int
	ConnsPerUser int
	Rooms        int
	RoomSize     int
	Groups       int
	GroupSize    int
	Rate         float64
	Mix          float64 // fraction of direct messages
	GroupMix     float64 // fraction of group messages; the rest go to rooms
	Body         int
	Duration     time.Duration
	Warmup       time.Duration
	Grace        time.Duration
	Seed         uint64
	// Remote: every direct message goes to a user connected to another
	// node than its sender.
	Remote bool

	// Clients.
	Procs           int
	SrcBase         string
	ConnsPerSrc     int
	DialConcurrency int

	// Modes and output.
	Compare    bool
	Max        bool
	MaxP99     time.Duration
	MaxStep    float64
	MaxSteps   int
	MaxRetries int
	Chart      string
	Replot     string
	KeepLogs   bool
	JSON       bool
	Progress   string

	// Soak: churn for this long instead of a measured window (soak.go).
	Soak        time.Duration
	SoakRestart time.Duration
}

// Local reports whether bench starts the cluster itself.
func (c *Config) Local() bool { return len(c.URLs) == 0 }

// Conns is the number of client connections.
func (c *Config) Conns() int { return c.Users * c.ConnsPerUser }

// fdsPerProc is the most connections bench puts in one client process: a
// process may hold at most 20,000 open files here, and a worker needs some
// for its pipes and the runtime.
const fdsPerProc = 15000

// listFlag is a repeatable flag whose values may also be comma-separated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// parseFlags reads the command line; flag.ErrHelp for -h.
func parseFlags(args []string, stderr io.Writer) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var urls, metrics, sizes, nodeArgs listFlag
	var nodeArgLine, nodeEnvLine, storeURL string

	fs.IntVar(&c.Nodes, "nodes", 3, "start a local cluster of this many shard processes on 127.0.0.2, .3, ... (ignored with --url)")
	fs.StringVar(&c.Routing, "routing", "owner", "routing of the local cluster: owner or broadcast")
	fs.StringVar(&c.ShardBin, "shard-bin", "", "shard binary for the local cluster (default: go build ./cmd/shard into a temporary directory)")
	fs.StringVar(&nodeArgLine, "node-args", "", "extra flags for every local node, space-separated, e.g. \"--rate 1000\"")
	fs.StringVar(&nodeEnvLine, "node-env", "", "environment for every local node, NAME=VALUE pairs, space-separated, e.g. \"GOMAXPROCS=1\"")
	fs.StringVar(&storeURL, "store", "", "message store URL for every local node (postgres://...): what durability costs, against a run without it")
	fs.Var(&urls, "url", "target these WebSocket URLs instead (ws://host:port/ws, nodes or nginx); repeatable or comma-separated")
	fs.Var(&metrics, "metrics-url", "with --url: the nodes' HTTP base URLs to read /metrics from (default: the members listed by /api/cluster of the first --url)")
	fs.BoolVar(&c.Baseline, "baseline", false, "first run the same workload against an echo server (fasthttp/websocket, one frame in, one frame out) and report each case's node CPU per message in echo rounds")
	fs.Var(&sizes, "sizes", "sweep: run the workload on local clusters of these sizes, e.g. 3,5,8")

	fs.IntVar(&c.Users, "users", 300, "users")
	fs.IntVar(&c.ConnsPerUser, "conns-per-user", 1, "connections (devices) per user, spread over the nodes")
	fs.IntVar(&c.Rooms, "rooms", 20, "rooms")
	fs.IntVar(&c.RoomSize, "room-size", 10, "users per room; each of their connections joins")
	fs.IntVar(&c.Groups, "groups", 20, "groups (with a message store: --store); each is created by its first member before the runs")
	fs.IntVar(&c.GroupSize, "group-size", 10, "members per group; every connection of each gets the group's messages")
	fs.Float64Var(&c.Rate, "rate", 1000, "offered chat messages per second, all clients together, on a fixed open-loop timeline")
	mix := mixFlag{c: c}
	c.Mix = 0.9
	fs.Var(&mix, "mix", "fraction of direct messages, the rest to rooms (0.9); or direct:room:group weights, e.g. 0:0:1 for group messages only")
	fs.IntVar(&c.Body, "body", 64, "message body size in bytes (at least the ~20-byte header that carries the sequence and send time)")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "measured window")
	fs.DurationVar(&c.Warmup, "warmup", 2*time.Second, "traffic before the measured window (location caches, TCP, the runtime warm up)")
	fs.DurationVar(&c.Grace, "grace", 2*time.Second, "after the window, how long to wait for answers and deliveries still on the way")
	fs.BoolVar(&c.Remote, "remote", false, "every direct message goes to a user whose connection is on another node than the sender's (needs --conns-per-user 1)")
	fs.Uint64Var(&c.Seed, "seed", 1, "seed of the senders' and targets' choice")

	fs.IntVar(&c.Procs, "procs", 0, fmt.Sprintf("client processes (default: one per %d connections)", fdsPerProc))
	fs.StringVar(&c.SrcBase, "src", "127.0.0.100", "first source address of the clients")
	// 2000: connect() looks for a free source port by walking the ports of
	// the address in use towards the same destination, so that a
	// well-filled address makes every connect slow (measured: 18,000 from one
	// address spent 60 % of bench's CPU in __inet_check_established).
	fs.IntVar(&c.ConnsPerSrc, "conns-per-src", 2000, "connections per source address before the next one (127.0.0.100, .101, ...)")
	fs.IntVar(&c.DialConcurrency, "dial-concurrency", 256, "connections being opened at once, per client process")

	fs.BoolVar(&c.Compare, "compare", false, "run the workload with --routing owner, then broadcast, each on a fresh local cluster, and print the ratios")
	fs.BoolVar(&c.Max, "max", false, "raise the rate step by step from --rate until p99 passes --max-p99 or a message is lost; report the highest sustained rate")
	fs.DurationVar(&c.MaxP99, "max-p99", 50*time.Millisecond, "with --max: the p99 send-to-delivery bound")
	fs.Float64Var(&c.MaxStep, "max-step", 1.5, "with --max: factor between steps (then two bisection steps)")
	fs.IntVar(&c.MaxSteps, "max-steps", 12, "with --max: at most this many steps")
	fs.IntVar(&c.MaxRetries, "max-retries", 1, "with --max: run a rate that fails again this many times; it fails only if every run does (a shared machine has blips)")
	fs.StringVar(&c.Chart, "chart", "", "write SVG charts into this directory: latency over time per run (and owner against broadcast with --compare), p99 against rate with --max, throughput, node-to-node messages and CPU against cluster size with --sizes")
	fs.BoolVar(&c.KeepLogs, "keep-logs", false, "keep the local nodes' logs (warn level and up) and say where; they are kept anyway when a case fails")
	fs.StringVar(&c.Replot, "replot", "", "measure nothing: read a report written by --json from this file and print it again (tables, or --json), with --chart its charts")
	fs.BoolVar(&c.JSON, "json", false, "print the report as JSON on stdout instead of tables")
	fs.StringVar(&c.Progress, "progress", "auto", "progress on stderr: auto (a live line on a terminal, a plain line every 5 s otherwise), line, plain, none")

	fs.DurationVar(&c.Soak, "soak", 0, "soak for this long instead: users connect, join, send and disconnect, the last local node is drained and restarted every --soak-restart; prints each node's RSS, goroutines, open files and heap every 10 s and their slopes at the end, and fails on a leak")
	fs.DurationVar(&c.SoakRestart, "soak-restart", time.Minute, "with --soak: how often the last node is drained and restarted")

	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	c.URLs, c.MetricsURL = urls, metrics
	for _, a := range strings.Fields(nodeArgLine) {
		nodeArgs = append(nodeArgs, a)
	}
	if storeURL != "" {
		nodeArgs = append(nodeArgs, "--store", storeURL)
	}
	c.NodeArgs = nodeArgs
	c.NodeEnv = strings.Fields(nodeEnvLine)
	for _, s := range sizes {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--sizes %q: want cluster sizes like 3,5,8", s)
		}
		c.Sizes = append(c.Sizes, n)
	}
	if c.Mix+c.GroupMix >= 1 {
		c.Rooms = 0 // no room messages: joining rooms would only add state
	}
	if c.GroupMix == 0 {
		c.Groups = 0 // nor creating groups
	}
	if c.Procs == 0 {
		c.Procs = (c.Conns() + fdsPerProc - 1) / fdsPerProc
	}
	return c, c.check()
}

func (c *Config) check() error {
	switch {
	case c.Local() && c.Nodes < 1:
		return errors.New("--nodes must be at least 1")
	case c.Routing != "owner" && c.Routing != "broadcast":
		return fmt.Errorf("--routing %q: want owner or broadcast", c.Routing)
	case !c.Local() && (c.Compare || len(c.Sizes) > 0):
		return errors.New("--compare and --sizes start their own clusters: they do not go with --url")
	case !c.Local() && (len(c.NodeArgs) > 0 || len(c.NodeEnv) > 0):
		return errors.New("--node-args and --node-env are for the local cluster: they do not go with --url")
	case slices.ContainsFunc(c.NodeEnv, func(e string) bool { name, _, ok := strings.Cut(e, "="); return !ok || name == "" }):
		return fmt.Errorf("--node-env %q: want NAME=VALUE pairs", strings.Join(c.NodeEnv, " "))
	case len(c.MetricsURL) > 0 && c.Local():
		return errors.New("--metrics-url goes with --url")
	case c.Rate <= 0:
		return errors.New("--rate must be positive")
	case c.Body < 1:
		return errors.New("--body must be at least 1")
	case c.Duration <= 0:
		return errors.New("--duration must be positive")
	case c.Warmup < 0 || c.Grace < 0:
		return errors.New("--warmup and --grace cannot be negative")
	case c.Procs < 1:
		return errors.New("--procs must be at least 1")
	case c.ConnsPerSrc < 1 || c.ConnsPerSrc > 28000:
		return errors.New("--conns-per-src must be 1 to 28000 (ephemeral ports of one address)")
	case net.ParseIP(c.SrcBase).To4() == nil:
		return fmt.Errorf("--src %q: want an IPv4 loopback address", c.SrcBase)
	case c.DialConcurrency < 1:
		return errors.New("--dial-concurrency must be at least 1")
	case c.Max && (c.MaxStep <= 1 || c.MaxSteps < 1 || c.MaxP99 <= 0 || c.MaxRetries < 0):
		return errors.New("--max needs --max-step > 1, --max-steps >= 1, --max-retries >= 0 and a positive --max-p99")
	case c.Soak > 0 && (!c.Local() || c.Nodes < 2 || c.Compare || c.Max || len(c.Sizes) > 0):
		return errors.New("--soak runs a local cluster of at least 2 nodes (--nodes), without --url, --compare, --max or --sizes")
	case c.Soak > 0 && c.GroupMix > 0:
		return errors.New("--soak sends direct and room messages only (soak.go): a --mix with groups does not go with it")
	case c.Soak > 0 && c.SoakRestart <= 0:
		return errors.New("--soak-restart must be positive")
	case c.Baseline && (!c.Local() || c.Max || c.Soak > 0 || c.Mix < 1):
		return errors.New("--baseline measures direct messages on a local cluster: it needs --mix 1, and does not go with --url, --max or --soak")
	case c.Remote && c.ConnsPerUser != 1:
		return errors.New("--remote needs --conns-per-user 1: a user with several connections has them on several nodes")
	case c.Progress != "auto" && c.Progress != "line" && c.Progress != "plain" && c.Progress != "none":
		return fmt.Errorf("--progress %q: want auto, line, plain or none", c.Progress)
	}
	for _, u := range c.URLs {
		if _, err := httpBase(u); err != nil {
			return err
		}
	}
	if per := (c.Conns() + c.Procs - 1) / c.Procs; per > 18000 {
		return fmt.Errorf("%d connections in %d client processes is %d each: a process may hold at most 20,000 open files; raise --procs", c.Conns(), c.Procs, per)
	}
	if last := int(net.ParseIP(c.SrcBase).To4()[3]) + (c.Conns()-1)/c.ConnsPerSrc; last > 254 {
		return fmt.Errorf("%d connections from --src %s at %d per address run past .254", c.Conns(), c.SrcBase, c.ConnsPerSrc)
	}
	if c.GroupMix > 0 && c.Local() && !slices.Contains(c.NodeArgs, "--store") && !slices.Contains(c.NodeArgs, "--data") {
		return errors.New("group messages (--mix) need a message store: add --store postgres://... (or --data DIR with --nodes 1)")
	}
	return checkWorkload(c.Users, c.ConnsPerUser, c.Rooms, c.RoomSize, c.Groups, c.GroupSize, c.Mix, c.GroupMix, c.Procs)
}

// mixFlag is --mix: a fraction of direct messages (the rest go to rooms),
// or three weights direct:room:group.
type mixFlag struct{ c *Config }

func (m *mixFlag) String() string {
	if m.c == nil {
		return ""
	}
	if m.c.GroupMix == 0 {
		return strconv.FormatFloat(m.c.Mix, 'g', -1, 64)
	}
	room := 1 - m.c.Mix - m.c.GroupMix
	return fmt.Sprintf("%g:%g:%g", m.c.Mix, room, m.c.GroupMix)
}

func (m *mixFlag) Set(s string) error {
	parts := strings.Split(s, ":")
	var w []float64
	for _, p := range parts {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || v < 0 {
			return fmt.Errorf("%q: want a fraction of direct messages, or direct:room:group weights", s)
		}
		w = append(w, v)
	}
	switch {
	case len(w) == 1 && w[0] <= 1:
		m.c.Mix, m.c.GroupMix = w[0], 0
	case len(w) == 3 && w[0]+w[1]+w[2] > 0:
		total := w[0] + w[1] + w[2]
		m.c.Mix, m.c.GroupMix = w[0]/total, w[2]/total
	default:
		return fmt.Errorf("%q: want a fraction of direct messages in [0, 1], or direct:room:group weights", s)
	}
	return nil
}
