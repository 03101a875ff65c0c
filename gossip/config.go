package gossip

import (
	"crypto/sha256"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// Config describes one node's membership. Only Name is required; every other field has the
// default written beside it.
type Config struct {
	// Name identifies the node in the cluster and in the ring; it must be unique. Required.
	// A second live node with the same name makes Start fail. A node that restarts under the
	// same name is re-admitted: at once at the same address, and at a new address once its
	// former self has been dead for DeadNodeReclaimTime (5 s).
	Name string

	// Bind is the host:port memberlist listens on, TCP and UDP on the same port. The host must
	// be an IP address. Port 0 picks a free port (tests); LocalAddr reports the real one.
	// Default "127.0.0.1:7946", the --gossip default.
	Bind string

	// Advertise is the host:port other nodes should use to reach this one, when it differs
	// from Bind (NAT, or Bind 0.0.0.0). The host must be an IP address. Default: empty, which
	// advertises Bind's address. Never leave it empty with Bind 0.0.0.0 on a multi-homed box:
	// memberlist would then advertise the first private IP it finds, not loopback. With Bind
	// port 0, memberlist advertises the bound port whatever the port given here.
	Advertise string

	// Join lists gossip addresses (host:port) of existing members. Empty starts a new cluster.
	// One answering seed is enough: it hands over the whole member list.
	Join []string

	// JoinTimeout bounds the joining: seeds are retried with jittered exponential backoff
	// (100 ms doubling to 2 s) until one answers; past the timeout Start fails with an error
	// naming the seeds. An attempt that has begun may overrun it by up to one TCP timeout
	// (2 s) per seed. Errors that no retry can cure (wrong cluster key, duplicate name) fail
	// at once. Default 30 s.
	JoinTimeout time.Duration

	// ClusterKey is a shared secret. When set, all gossip (UDP and TCP) is encrypted and
	// authenticated with AES-256-GCM under sha256(ClusterKey), so a node with another key, or
	// none, cannot join. All nodes must agree. Default: empty, no encryption.
	ClusterKey string

	// Meta is what this node tells the others about itself: its client and data-plane
	// addresses. Encoded it must fit memberlist's 512-byte limit; Start checks that.
	Meta Meta

	// Logger receives member events at info (member joined, left or failed, key "peer") and
	// memberlist's own log: its [DEBUG] and [INFO] lines at debug, [WARN] and [ERR] at warn.
	// It should already carry the node's name (logger.With("node", name)).
	// Default: slog.Default().
	Logger *slog.Logger
}

// Tuning of the failure detector. Measured with memberlist v0.7.0 when it was chosen,
// nodes in-process on 127.0.0.1 of the project's 2-core machine: crash detected in
// 2.1-5.2 s for 3-8 nodes, graceful leave seen in 100-200 ms. They are not part of
// Config because every node of a cluster must run the same values.
const (
	defaultBind        = "127.0.0.1:7946"
	defaultJoinTimeout = 30 * time.Second

	// probeInterval 500 ms: each node probes one peer this often. Lower values produced false
	// suspicions on a 2-core box under load (GC pauses, CPU saturation).
	probeInterval = 500 * time.Millisecond
	// probeTimeout 250 ms: a direct probe that gets no ack within this falls back to
	// indirect probes through other members. Loopback and LAN round trips are far below it.
	probeTimeout = 250 * time.Millisecond
	// suspicionMult 3: the suspicion timeout is 3 x log10(n) probe intervals (1.5 s for
	// n < 10). It also sets k = 3-2 = 1: one confirmation from another member shortens the
	// timer to that minimum. LAN's 4 makes k = 2, impossible in a 3-node cluster.
	suspicionMult = 3
	// suspicionMaxTimeoutMult 3: without confirmations a suspect is declared dead after at
	// most 3 x 1.5 s = 4.5 s, within the 5 s of docs/protocol.md §10.3.
	suspicionMaxTimeoutMult = 3
	// gossipInterval 100 ms: how often queued broadcasts go out; bounds how quickly a
	// join, leave or death spreads.
	gossipInterval = 100 * time.Millisecond
	// pushPullInterval 15 s: full-state anti-entropy with one random member, which heals
	// anything gossip missed.
	pushPullInterval = 15 * time.Second
	// gossipToTheDeadTime 15 s: how long dead members are still gossiped to (so they can
	// refute) before memberlist forgets them.
	gossipToTheDeadTime = 15 * time.Second
	// deadNodeReclaimTime 5 s: a name whose member has been dead this long may come back
	// from another address. 0 (the default) ignores such a restart until the dead entry is
	// reaped, leaving an asymmetric split (measured with memberlist v0.7.0: the others log
	// a conflicting address and ignore the newcomer; with 1 s it rejoined in 99 ms).
	deadNodeReclaimTime = 5 * time.Second
	// tcpTimeout 2 s: bounds push/pull, join and TCP fallback probes.
	tcpTimeout = 2 * time.Second
	// Label is mixed into every packet and stream (and into GCM as authenticated data), so
	// that other memberlist clusters on the same network are refused.
	Label = "shard"
)

// resolved is a validated Config with defaults applied.
type resolved struct {
	Config
	bindIP      string
	bindPort    int
	advIP       string
	advPort     int
	secretKey   []byte
	encodedMeta []byte
}

func (c Config) resolve() (*resolved, error) {
	r := &resolved{Config: c}
	if r.Name == "" {
		return nil, fmt.Errorf("gossip: Config.Name is required")
	}
	if r.Bind == "" {
		r.Bind = defaultBind
	}
	if r.JoinTimeout <= 0 {
		r.JoinTimeout = defaultJoinTimeout
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	var err error
	if r.bindIP, r.bindPort, err = splitIPPort(r.Bind); err != nil {
		return nil, fmt.Errorf("gossip: bind address %q: %w", r.Bind, err)
	}
	if r.Advertise != "" {
		if r.advIP, r.advPort, err = splitIPPort(r.Advertise); err != nil {
			return nil, fmt.Errorf("gossip: advertise address %q: %w", r.Advertise, err)
		}
	}
	if r.ClusterKey != "" {
		sum := sha256.Sum256([]byte(r.ClusterKey))
		r.secretKey = sum[:]
	}
	// Check the largest record we will ever announce (the leaving one), so that NodeMeta can
	// never exceed the limit: memberlist panics when it does.
	if r.encodedMeta, err = encodeMeta(r.Meta, true); err != nil {
		return nil, fmt.Errorf("gossip: meta: %w", err)
	}
	if r.encodedMeta, err = encodeMeta(r.Meta, false); err != nil {
		return nil, fmt.Errorf("gossip: meta: %w", err)
	}
	return r, nil
}

func splitIPPort(hostport string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, err
	}
	if net.ParseIP(host) == nil {
		return "", 0, fmt.Errorf("host %q is not an IP address", host)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", portStr)
	}
	return host, port, nil
}

// memberlistConfig is DefaultLANConfig with the tuning above. DefaultLocalConfig is not a
// better start: its SuspicionMult 3 with max multiplier 6 took 19.8 s to detect a crash with
// two survivors (measured as above; these settings took 5.2 s).
func (r *resolved) memberlistConfig(d delegates) *memberlist.Config {
	c := memberlist.DefaultLANConfig()
	c.Name = r.Name
	c.BindAddr, c.BindPort = r.bindIP, r.bindPort
	c.AdvertiseAddr, c.AdvertisePort = r.advIP, r.advPort
	if r.Advertise == "" {
		c.AdvertiseAddr, c.AdvertisePort = "", r.bindPort
	}
	c.ProbeInterval = probeInterval
	c.ProbeTimeout = probeTimeout
	c.SuspicionMult = suspicionMult
	c.SuspicionMaxTimeoutMult = suspicionMaxTimeoutMult
	c.GossipInterval = gossipInterval
	c.PushPullInterval = pushPullInterval
	c.GossipToTheDeadTime = gossipToTheDeadTime
	c.DeadNodeReclaimTime = deadNodeReclaimTime
	c.TCPTimeout = tcpTimeout
	c.Label = Label
	c.SecretKey = r.secretKey
	c.Logger = log.New(&logWriter{logger: r.Logger}, "", 0)
	c.Delegate = d
	c.Events = d
	c.Conflict = d
	c.Merge = d
	return c
}
