package node

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/valyala/fasthttp"

	"github.com/shardchat/shard/gossip"
	"github.com/shardchat/shard/link"
	"github.com/shardchat/shard/ring"
	"github.com/shardchat/shard/router"
	"github.com/shardchat/shard/session"
	"github.com/shardchat/shard/store"
)

// Node is one running shard node.
type Node struct {
	cfg       Config
	log       *slog.Logger
	name      string
	httpLn    net.Listener
	link      string // bound node-to-node address
	server    *fasthttp.Server
	router    *router.Router
	gossip    *gossip.Gossip
	reg       *prometheus.Registry
	rm        *router.Metrics
	store     store.Store // nil: none
	storeKind string
	// publicOrigin is --public-url's origin (origin.go); "" without one.
	publicOrigin string
	webhook      *webhook // nil without --webhook
	view         *clusterView

	members prometheus.Gauge

	ready    atomic.Bool // joined and the first ring installed
	draining atomic.Bool
	connSeq  atomic.Uint64

	connMu   sync.Mutex
	conns    map[*session.Conn]connSlot
	perUser  map[string]int       // connections here by user (conns.go)
	perAddr  map[netip.Prefix]int // connections here by client address (clientaddr.go)
	handlers sync.WaitGroup       // hijacked WebSocket handlers still running
	// trustedProxies are --trusted-proxies, parsed.
	trustedProxies []netip.Prefix

	stop      chan struct{}
	loops     sync.WaitGroup
	stopOnce  sync.Once
	serveDone chan struct{}
}

// Start opens the listeners, joins the cluster and serves. It returns once
// the node is ready, or an error that says which part failed.
func Start(cfg Config) (*Node, error) {
	cfg = cfg.withDefaults()
	n := &Node{
		cfg:       cfg,
		conns:     make(map[*session.Conn]connSlot),
		perUser:   make(map[string]int),
		perAddr:   make(map[netip.Prefix]int),
		stop:      make(chan struct{}),
		serveDone: make(chan struct{}),
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Validate has checked both.
	if cfg.PublicURL != "" {
		n.publicOrigin, _ = parseOrigin(cfg.PublicURL)
	}
	n.trustedProxies, _ = parseTrustedProxies(cfg.TrustedProxies)
	var err error
	linkAt := cfg.Link
	if linkAt == "" {
		if linkAt, err = linkAddr(cfg.Gossip); err != nil {
			return nil, err
		}
	}
	exposed, err := checkExposure(cfg, linkAt)
	if err != nil {
		return nil, err
	}
	if len(cfg.Name) > link.MaxName {
		return nil, fmt.Errorf("name of %d bytes: at most %d", len(cfg.Name), link.MaxName)
	}
	n.httpLn, err = net.Listen("tcp", cfg.HTTP)
	if err != nil {
		return nil, fmt.Errorf("listen http %s: %w", cfg.HTTP, err)
	}
	n.name = cfg.Name
	if n.name == "" {
		n.name = "shard-" + strings.ReplaceAll(n.httpLn.Addr().String(), ":", "-")
	}
	n.log = cfg.Logger.With("node", n.name)
	if len(exposed) > 0 {
		n.log.Warn("insecure: no cluster key on a non-loopback address; node-to-node traffic is neither authenticated nor encrypted, and anyone who can send from a member's address can pose as it",
			"addrs", exposed)
	}

	linkLn, err := net.Listen("tcp", linkAt)
	if err != nil {
		n.httpLn.Close()
		return nil, fmt.Errorf("listen link %s: %w", linkAt, err)
	}
	n.link = linkLn.Addr().String()

	n.reg = prometheus.NewRegistry()
	n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	n.members = prometheus.NewGauge(prometheus.GaugeOpts{Name: "shard_members", Help: "Live members this node sees, itself included."})
	n.reg.MustRegister(n.members)
	n.rm = router.NewMetrics(n.reg)

	var clusterKey []byte
	if cfg.ClusterKey != "" {
		sum := sha256.Sum256([]byte("shard link key\x00" + cfg.ClusterKey))
		clusterKey = sum[:]
	}
	if err := n.openStore(); err != nil {
		linkLn.Close()
		n.httpLn.Close()
		return nil, err
	}

	var incBytes [8]byte
	rand.Read(incBytes[:])
	inc := hex.EncodeToString(incBytes[:])
	var offline func(router.OfflineMessage)
	if cfg.Webhook != "" {
		if n.store == nil {
			n.closeStore()
			linkLn.Close()
			n.httpLn.Close()
			return nil, errors.New("--webhook needs a message store (--data or --store): it tells of messages stored for offline users")
		}
		if n.webhook, err = newWebhook(cfg.Webhook, cfg.WebhookSecret, cfg.WebhookBackoff, n.log, n.reg); err != nil {
			n.closeStore()
			linkLn.Close()
			n.httpLn.Close()
			return nil, err
		}
		offline = n.webhook.offline
	}
	links := link.New(link.Config{Self: n.name, Inc: inc, Key: clusterKey, Logger: n.log}, linkLn)
	n.view = &clusterView{links: links, inc: inc}
	n.router = router.New(router.Config{
		Self:        n.name,
		Incarnation: inc,
		Mode:        cfg.Routing,
		MaxRooms:    cfg.MaxRooms,
		MaxWatch:    cfg.MaxWatch,
		StoreRate:   cfg.StoreRate,
		StoreBurst:  router.StoreBucket(cfg.StoreRate, cfg.Session.MaxFrame),
		Store:       n.store,
		Offline:     offline,
		Logger:      n.log,
		Metrics:     n.rm,
	}, links)

	for _, reason := range link.RefusalReasons {
		n.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "shard_link_refused_total",
			Help:        "Node-to-node connections this node refused before their hello was done, by why.",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 { return float64(links.Refused(reason)) }))
	}

	sizes := func(pick func(queued, keys, cached int) int) func() float64 {
		return func() float64 { return float64(pick(n.router.Sizes())) }
	}
	if n.store != nil {
		n.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shard_store_up",
			Help: "1 while the message store takes writes, 0 while it is down (unreachable, or its disk full)."},
			func() float64 {
				if n.store.Health().OK {
					return 1
				}
				return 0
			}))
	}
	n.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shard_link_queued_frames", Help: "Frames waiting in the node-to-node link queues."},
			sizes(func(q, _, _ int) int { return q })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shard_directory_keys", Help: "Users and rooms with an entry in this node's directory."},
			sizes(func(_, k, _ int) int { return k })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shard_location_cache_keys", Help: "Locations this node caches as a sender."},
			sizes(func(_, _, c int) int { return c })),
	)

	n.server = &fasthttp.Server{
		Handler:     n.serveHTTP,
		Name:        "shard",
		ReadTimeout: cfg.HandshakeTimeout,
		// An idle keep-alive connection holds one of Concurrency's slots:
		// no longer than a request may take to arrive.
		IdleTimeout: cfg.HandshakeTimeout,
		// Room for the WebSockets plus the API, and a bound on what
		// half-open handshakes can hold.
		Concurrency:           cfg.MaxConns + 1024,
		NoDefaultServerHeader: true,
		ReduceMemoryUsage:     true,
		// A hijacked WebSocket runs in its own goroutine and closes its own
		// socket: fasthttp's request context and its parsed headers go back
		// to the pool at once instead of living as long as the connection
		// (about 3 KiB each).
		KeepHijackedConns: true,
		Logger:            fasthttpLogger{n.log},
	}
	go func() {
		defer close(n.serveDone)
		if err := n.server.Serve(session.CoalescingListener{Listener: n.httpLn}); err != nil {
			n.log.Error("http server stopped", "err", err)
		}
	}()

	if cfg.Pprof != "" {
		if err := n.servePprof(cfg.Pprof); err != nil {
			n.closeAll()
			return nil, err
		}
	}

	n.gossip, err = gossip.Start(gossip.Config{
		Name:        n.name,
		Bind:        cfg.Gossip,
		Advertise:   cfg.Advertise,
		Join:        cfg.Join,
		JoinTimeout: cfg.JoinTimeout,
		ClusterKey:  cfg.ClusterKey,
		Meta:        gossip.Meta{HTTP: n.httpLn.Addr().String(), Link: linkLn.Addr().String(), Inc: inc, Ring: int(ring.Latest)},
		Logger:      n.log,
	})
	if err != nil {
		n.closeAll()
		return nil, err
	}
	if err := n.applyMembers(); err != nil {
		n.log.Warn("first ring install incomplete", "err", err)
	}
	n.ready.Store(true)
	n.loops.Add(1)
	go n.membershipLoop()
	n.log.Info("node ready", "http", n.httpLn.Addr().String(), "gossip", n.gossip.LocalAddr(),
		"link", linkLn.Addr().String(), "routing", cfg.Routing.String(), "members", len(n.gossip.Alive()))
	return n, nil
}

// Name is the node's name in the cluster.
func (n *Node) Name() string { return n.name }

// HTTPAddr is the bound client listener address.
func (n *Node) HTTPAddr() string { return n.httpLn.Addr().String() }

// LinkAddr is the bound node-to-node address.
func (n *Node) LinkAddr() string { return n.link }

// GossipAddr is the bound gossip address, for others to join through.
func (n *Node) GossipAddr() string { return n.gossip.LocalAddr() }

// Router exposes the node's router to tests in this module.
func (n *Node) Router() *router.Router { return n.router }

// Registry is the node's metrics registry.
func (n *Node) Registry() *prometheus.Registry { return n.reg }

// applyMembers hands the router the members it routes by: the alive ones,
// and the ones that left but may still be draining their connections.
func (n *Node) applyMembers() error {
	var members []router.Member
	alive := 0
	for _, m := range n.gossip.Members() {
		switch m.State {
		case gossip.StateAlive, gossip.StateSuspect:
			alive++
			members = append(members, router.Member{Name: m.Name, Link: m.Meta.Link, Inc: m.Meta.Inc, Ring: ring.Announced(m.Meta.Ring)})
		case gossip.StateLeft:
			members = append(members, router.Member{Name: m.Name, Link: m.Meta.Link, Inc: m.Meta.Inc, Ring: ring.Announced(m.Meta.Ring), Left: true})
		}
	}
	n.members.Set(float64(alive))
	return n.router.SetMembers(members)
}

// membershipLoop turns each burst of gossip events into one ring rebuild.
func (n *Node) membershipLoop() {
	defer n.loops.Done()
	for {
		select {
		case <-n.stop:
			return
		case <-n.gossip.Changes():
			if err := n.applyMembers(); err != nil {
				n.log.Warn("re-registration incomplete", "err", err)
			}
		}
	}
}

// ErrDrainCut is returned by Drain when it had to stop at the drain timeout.
var ErrDrainCut = errors.New("drain cut short at the drain timeout")

// Drain shuts the node down gracefully (docs/protocol.md §10.2): it stops being
// ready, leaves the gossip, answers every frame it has already read, closes
// client connections with 1012 and stops, all within the drain timeout.
func (n *Node) Drain() error {
	start := time.Now()
	n.draining.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.DrainTimeout)
	defer cancel()
	n.log.Info("draining", "connections", n.connCount())
	if err := n.gossip.Leave(time.Second); err != nil {
		n.log.Warn("gossip leave", "err", err)
	}
	n.connMu.Lock()
	conns := make([]*session.Conn, 0, len(n.conns))
	for c := range n.conns {
		conns = append(conns, c)
	}
	n.connMu.Unlock()
	for _, c := range conns {
		go c.Shutdown(ctx, session.CloseRestart)
	}
	handlersDone := make(chan struct{})
	go func() {
		n.handlers.Wait()
		close(handlersDone)
	}()
	var err error
	select {
	case <-handlersDone:
		// The closed connections' unregistrations must reach their owners
		// before the links go, or owners would list them until we are
		// forgotten.
		if n.router.WaitRegistrations(ctx) != nil {
			err = ErrDrainCut
		}
	case <-ctx.Done():
		err = ErrDrainCut
	}
	n.closeAll()
	n.log.Info("drained", "took", time.Since(start).Round(time.Millisecond).String(), "cut", err != nil)
	return err
}

// Kill stops the node at once without telling anyone, as a crash would:
// tests use it. Connections are dropped without a close frame.
func (n *Node) Kill() {
	n.draining.Store(true)
	n.connMu.Lock()
	for c := range n.conns {
		c.Close(session.CloseClientGone)
	}
	n.connMu.Unlock()
	n.closeAll()
}

func (n *Node) closeAll() {
	n.stopOnce.Do(func() {
		close(n.stop)
		if n.gossip != nil {
			_ = n.gossip.Shutdown()
		}
		n.loops.Wait()
		_ = n.server.Shutdown()
		<-n.serveDone
		n.router.Close()
		if n.webhook != nil {
			n.webhook.close()
		}
		n.closeStore()
		// Hijacked connections outlive the server's shutdown: wait for
		// their handlers, which end once their sockets close.
		n.connMu.Lock()
		for c := range n.conns {
			c.Close(session.CloseRestart)
		}
		n.connMu.Unlock()
		n.handlers.Wait()
	})
}

func (n *Node) closeStore() {
	if n.store != nil {
		if err := n.store.Close(); err != nil {
			n.log.Warn("store close", "err", err)
		}
	}
}

// storeState is /api/cluster's store_state and store_error for h.
func storeState(h store.Health) (state, cause string) {
	if h.OK {
		return "ok", ""
	}
	return "down", h.Cause
}

// openStore opens --store, else --data, else nothing, and says which.
func (n *Node) openStore() error {
	url, kind := n.cfg.Store, "postgres"
	if url == "" {
		url, kind = n.cfg.Data, "embedded"
	}
	if url == "" {
		n.storeKind = "none"
		n.log.Info("no message store: live delivery only, at most once; a message to an offline user is dropped")
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, url, store.Options{MaxPerStream: n.cfg.RetainCount, MaxAge: n.cfg.RetainAge,
		MaxGroupMembers: n.cfg.MaxGroupMembers, Logger: n.log})
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	n.store, n.storeKind = meterStore(st, n.reg), kind
	n.log.Info("message store open", "kind", kind)
	return nil
}

// servePprof serves the Go profiler on its own listener, never on the
// client one.
func (n *Node) servePprof(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen pprof %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	n.loops.Add(1)
	go func() {
		defer n.loops.Done()
		_ = srv.Serve(ln)
	}()
	n.loops.Add(1)
	go func() {
		defer n.loops.Done()
		<-n.stop
		srv.Close()
	}()
	return nil
}

type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug("http: " + fmt.Sprintf(format, args...))
}
