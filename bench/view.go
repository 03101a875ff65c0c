package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/fakepeers"
	"github.com/shardchat/shard/internal/freeport"
	"github.com/shardchat/shard/internal/shardproc"
)

// `bench view` is one node's view of a big cluster (issue 14, part 2): a
// real shard process carries the load one node of an N-node cluster
// carries at a cluster-wide rate R, from its own clients and from N-1
// synthetic peers (internal/fakepeers) that gossip and speak the real link
// protocol. R doubles until the node saturates (p99 over --max-p99, a
// loss, or --max-cores of CPU), then one step between the last pass and
// the failure: the last R that passed is the cluster's capacity at N.
//
//	go run ./bench view --sizes 8,64,256 --chart docs/ --json > docs/view.json

// viewConfig is the command line of `bench view`.
type viewConfig struct {
	Sizes        []int
	Routings     []string
	UsersPerNode int
	Step, Grace  time.Duration
	Start        float64
	MaxSteps     int
	Runs         int
	MaxP99       time.Duration
	MaxCores     float64
	Body         int
	Seed         uint64
	ShardBin     string
	Chart        string
	Profile      string
	JSON         bool
}

func parseViewFlags(args []string, stderr io.Writer) (*viewConfig, error) {
	c := &viewConfig{}
	fs := flag.NewFlagSet("bench view", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sizes, routings listFlag
	fs.Var(&sizes, "sizes", "cluster sizes N, the node and N-1 synthetic peers (default 8,64,256)")
	fs.Var(&routings, "routing", "routings to measure, each at every size (default owner,broadcast)")
	fs.IntVar(&c.UsersPerNode, "users-per-node", 200, "users per node: the node's own are real WebSocket clients")
	fs.DurationVar(&c.Step, "step", 4*time.Second, "length of each rate step")
	fs.DurationVar(&c.Grace, "grace", 3*time.Second, "wait for the answers after a step")
	fs.Float64Var(&c.Start, "start", 2000, "first cluster-wide rate, messages per second")
	fs.IntVar(&c.Runs, "runs", 1, "rounds of every case; the report keeps each case's median")
	fs.IntVar(&c.MaxSteps, "max-steps", 14, "rate steps per case at most")
	fs.DurationVar(&c.MaxP99, "max-p99", 50*time.Millisecond, "a step whose p99 (client acks or peers' requests) is over this has saturated the node")
	fs.Float64Var(&c.MaxCores, "max-cores", 0.95, "a step in which the node used this many cores has saturated it")
	fs.IntVar(&c.Body, "body", 32, "message body bytes")
	fs.Uint64Var(&c.Seed, "seed", 1, "seed of the draws")
	fs.StringVar(&c.ShardBin, "shard-bin", "", "shard binary (default: build cmd/shard)")
	fs.StringVar(&c.Chart, "chart", "", "directory to write view-capacity.svg and view-cpu.svg into")
	fs.StringVar(&c.Profile, "profile", "", "directory to write the node's CPU profile at its capacity into, one per case")
	fs.BoolVar(&c.JSON, "json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if len(sizes) == 0 {
		sizes = listFlag{"8", "64", "256"}
	}
	for _, s := range sizes {
		n, err := strconv.Atoi(s)
		if err != nil || n < 2 || n > fakepeers.MaxPeers+1 {
			return nil, fmt.Errorf("--sizes: %q, want cluster sizes from 2 to %d", s, fakepeers.MaxPeers+1)
		}
		c.Sizes = append(c.Sizes, n)
	}
	c.Routings = routings
	if len(c.Routings) == 0 {
		c.Routings = []string{"owner", "broadcast"}
	}
	for _, r := range c.Routings {
		if r != "owner" && r != "broadcast" {
			return nil, fmt.Errorf("--routing: %q, want owner or broadcast", r)
		}
	}
	if c.UsersPerNode < 1 || c.Start <= 0 || c.MaxSteps < 1 || c.Step <= 0 || c.Runs < 1 {
		return nil, errors.New("--users-per-node, --start, --max-steps, --runs and --step must be positive")
	}
	return c, nil
}

// runView is `bench view`: exit 0 when every case ran.
func runView(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseViewFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench view: %v\n", err)
		return 2
	}
	if _, err := raiseNofile(); err != nil { // 3 sockets per peer, 1 per client
		fmt.Fprintf(stderr, "bench view: %v\n", err)
	}
	tmp, err := os.MkdirTemp("", "bench-view-")
	if err != nil {
		fmt.Fprintf(stderr, "bench view: %v\n", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	bin := cfg.ShardBin
	if bin == "" {
		if bin, err = buildShard(ctx, tmp); err != nil {
			fmt.Fprintf(stderr, "bench view: %v\n", err)
			return 1
		}
	}
	rep := &ViewReport{Command: strings.TrimSpace("go run ./bench view " + strings.Join(args, " ")), Cores: runtime.NumCPU(),
		Step: cfg.Step.String(), UsersPerNode: cfg.UsersPerNode, Runs: cfg.Runs, LoadStart: loadAvg()}
	// Each round plays every case once; the report keeps, per case, the
	// round of median capacity, and lists every round's.
	played := map[string][]ViewCase{}
	for round := range cfg.Runs {
		rc := *cfg
		if round > 0 {
			rc.Profile = "" // one profile per case
		}
		for _, n := range cfg.Sizes {
			for _, routing := range cfg.Routings {
				fmt.Fprintf(stderr, "bench view: %s at %d nodes, round %d of %d; load average %.2f\n", routing, n, round+1, cfg.Runs, loadAvg())
				cs, err := runViewCase(ctx, &rc, bin, tmp, n, routing, stderr)
				if err != nil {
					fmt.Fprintf(stderr, "bench view: %s at %d nodes: %v\n", routing, n, err)
					rep.Errors = append(rep.Errors, fmt.Sprintf("%s-n%d round %d: %v", routing, n, round+1, err))
					continue
				}
				key := fmt.Sprintf("%s-n%d", routing, n)
				played[key] = append(played[key], cs)
			}
		}
	}
	for _, n := range cfg.Sizes {
		for _, routing := range cfg.Routings {
			if cs := played[fmt.Sprintf("%s-n%d", routing, n)]; len(cs) > 0 {
				rep.Cases = append(rep.Cases, medianCase(cs))
			}
		}
	}
	rep.LoadEnd = loadAvg()
	rep.ratios()
	if cfg.Chart != "" {
		files, err := writeViewCharts(cfg.Chart, rep)
		if err != nil {
			fmt.Fprintf(stderr, "bench view: charts: %v\n", err)
			return 1
		}
		rep.Charts = files
	}
	if err := writeView(stdout, rep, cfg.JSON); err != nil {
		fmt.Fprintf(stderr, "bench view: %v\n", err)
		return 1
	}
	if len(rep.Errors) > 0 {
		return 1
	}
	return 0
}

// runViewCase starts a node, its peers and its clients, and raises the rate
// until the node saturates.
func runViewCase(ctx context.Context, cfg *viewConfig, bin, tmp string, n int, routing string, stderr io.Writer) (ViewCase, error) {
	cs := ViewCase{Nodes: n, Routing: routing}
	host := shardproc.Loopback(0)
	addrs, err := shardproc.FreeAddrs(host)
	if err != nil {
		return cs, err
	}
	// The node's share of a cluster's senders is concentrated on
	// --users-per-node clients: at 8 nodes and R = 512,000 each sends 320
	// messages a second, past the per-connection limit (--rate, 200) that
	// guards a node against one abusive client. The limit is not what is
	// measured here.
	args := []string{"--routing", routing, "--log-level", "warn", "--rate", strconv.Itoa(viewClientRate)}
	pprofAddr := ""
	if cfg.Profile != "" {
		port, err := freeport.TCP(host)
		if err != nil {
			return cs, err
		}
		pprofAddr = fmt.Sprintf("%s:%d", host, port)
		args = append(args, "--pprof", pprofAddr)
	}
	name := fmt.Sprintf("%s-n%d", routing, n)
	node, err := shardproc.Start(shardproc.Spec{Name: "n1", Addrs: addrs, Bin: bin, Args: args,
		Log: filepath.Join(tmp, name+".log"), SysProcAttr: childAttr()})
	if err != nil {
		return cs, err
	}
	defer stopCluster([]*shardproc.Process{node})
	if err := shardproc.WaitReady(ctx, readyTimeout, node); err != nil {
		return cs, err
	}
	setup := time.Now()
	gen0 := cpuTime()
	peers, err := fakepeers.Start(ctx, fakepeers.Config{Peers: n - 1, Node: "n1", NodeGossip: addrs.Gossip,
		UsersPerNode: cfg.UsersPerNode, Broadcast: routing == "broadcast"})
	if err != nil {
		return cs, err
	}
	defer peers.Close()
	if err := shardproc.WaitRing(ctx, 6*readyTimeout, n, node); err != nil {
		return cs, err
	}
	if err := peers.Settle(ctx); err != nil {
		return cs, err
	}
	draws, err := peers.Draws()
	if err != nil {
		return cs, err
	}
	load := &viewLoad{nodes: n, pid: node.PID(), peers: peers, draws: draws, body: bodyOf(cfg.Body), seed: cfg.Seed}
	for _, u := range peers.NodeUsers() {
		cl, err := client.Dial(ctx, client.Options{URL: "ws://" + addrs.HTTP + "/ws", User: fakepeers.User(u), MessageBuffer: messageBuffer})
		if err != nil {
			return cs, fmt.Errorf("client %s: %w", fakepeers.User(u), err)
		}
		load.clients = append(load.clients, cl)
		load.users = append(load.users, u)
	}
	var recv sync.WaitGroup
	load.receive(&recv)
	defer func() {
		for _, cl := range load.clients {
			cl.Close()
		}
		recv.Wait()
	}()
	cs.SetupSeconds = time.Since(setup).Seconds()
	cs.SetupGenCPU = (cpuTime() - gen0).Seconds()

	// The peers' memberlists pass on the news of the N-1 joins for a while
	// (255 of them took a core for half a minute): the steps wait for that
	// to end, or it would be the generator's load in the first of them.
	cs.QuietSeconds = waitQuiet(ctx, quietCores, quietMax)

	// The cost of gossip alone: the node among N-1 members, and the
	// peers' N-1 memberlists, with no chat traffic.
	const idle = 3 * time.Second
	nc0, _ := procCPU(node.PID())
	g0, b0, t0 := cpuTime(), boxCPU(), time.Now()
	sleepCtx(ctx, idle)
	nc1, _ := procCPU(node.PID())
	wall := time.Since(t0).Seconds()
	cs.IdleNodeCores = (nc1 - nc0).Seconds() / wall
	cs.IdlePeersCores = (cpuTime() - g0).Seconds() / wall
	cs.IdleBoxCores = (boxCPU() - b0).Seconds() / wall

	// One step at the first rate, not judged, fills the node's and the
	// peers' location caches as a running cluster's would be: the first
	// judged step is not the cold start of a cluster.
	load.run(ctx, cfg.Start, cfg.Step, cfg.Grace, -2)
	sleepCtx(ctx, time.Second)

	// R doubles until a step fails, then halves until one passes, then
	// one step between the two. A step that failed while the box was full
	// or the generator late (Limit not "node") is played once more: the
	// other benchmarks on the box come and go.
	var pass, fail float64
	rate := cfg.Start
	retried := map[float64]bool{}
	for i := 0; i < cfg.MaxSteps && ctx.Err() == nil; i++ {
		st := viewStep(cfg, load.run(ctx, rate, cfg.Step, cfg.Grace, i), rate, runtime.NumCPU())
		cs.Steps = append(cs.Steps, st)
		fmt.Fprintf(stderr, "  R %.0f: node %.2f cores (waited %.2f), bench %.2f (waited %.2f), box %.2f; p99 ack %.1f ms peers %.1f ms, generator late %.1f ms; lost %d: %s\n",
			rate, st.NodeCores, st.NodeWait, st.BenchCores, st.BenchWait, st.BoxCores, st.AckP99, st.PeerP99, st.LagP99, st.Lost, st.verdict())
		sleepCtx(ctx, time.Second)
		if !st.Pass && st.Limit != "node" && !retried[rate] {
			retried[rate] = true
			continue
		}
		pass, fail = searchBounds(cs.Steps)
		switch {
		case fail == 0:
			rate = 2 * pass
		case pass == 0:
			rate = fail / 2
		case fail/pass > 1.5:
			rate = math.Sqrt(pass * fail) // one step between the two
		default:
			i = cfg.MaxSteps
		}
	}
	cs.Capacity = pass
	for i := range cs.Steps {
		st := &cs.Steps[i]
		if st.Rate == pass && st.Pass {
			cs.AtCapacity = st
		}
		if st.Rate == fail && !st.Pass {
			cs.StoppedBy, cs.Limit = st.Why, st.Limit
		}
	}
	// The node's CPU is its idle (gossip) CPU and a cost per cluster
	// message, taken at the highest rate it carried without a loss (on the
	// busy box that step may have been too slow to pass, or the box full):
	// one core is reached at R = (1-idle)/cost.
	var top *ViewStep
	for i := range cs.Steps {
		if st := &cs.Steps[i]; st.Lost == 0 && (top == nil || st.Rate > top.Rate) {
			top = st
		}
	}
	if top != nil {
		cost := (top.NodeCores - cs.IdleNodeCores) * top.Seconds / (top.Rate * top.Played)
		if cost > 0 {
			cs.CoreCapacity, cs.CoreFrom = (1-cs.IdleNodeCores)/cost, top.Rate
		}
	}
	if pprofAddr != "" && pass > 0 {
		if err := profileAt(ctx, cfg, load, pass, pprofAddr, filepath.Join(cfg.Profile, "view-"+name+".pprof")); err != nil {
			fmt.Fprintf(stderr, "bench view: profile: %v\n", err)
		}
	}
	return cs, nil
}

// profileAt plays rate once more while the node profiles its CPU.
func profileAt(ctx context.Context, cfg *viewConfig, load *viewLoad, rate float64, addr, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	secs := int(math.Max(1, cfg.Step.Seconds()))
	errc := make(chan error, 1)
	go func() {
		u := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs)
		resp, err := (&http.Client{Timeout: time.Duration(secs+10) * time.Second, Transport: &http.Transport{Proxy: nil}}).Get(u)
		if err != nil {
			errc <- err
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(path)
		if err != nil {
			errc <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		errc <- err
	}()
	load.run(ctx, rate, time.Duration(secs)*time.Second, cfg.Grace, -1)
	return <-errc
}

// medianCase is the case of median capacity among the rounds of one,
// with every round's capacity and projection to one core.
func medianCase(rounds []ViewCase) ViewCase {
	sorted := slices.Clone(rounds)
	slices.SortFunc(sorted, func(a, b ViewCase) int { return cmp.Compare(a.Capacity, b.Capacity) })
	m := sorted[len(sorted)/2]
	for _, r := range rounds {
		m.Rounds = append(m.Rounds, r.Capacity)
		m.CoreRounds = append(m.CoreRounds, r.CoreCapacity)
	}
	return m
}

// viewClientRate is the node's per-connection limit in `bench view`, far
// above what its clients send.
const viewClientRate = 1 << 20

// quietCores and quietMax: the bench process is quiet once it uses less
// than quietCores over a second; it waits for that quietMax at most.
const (
	quietCores = 0.15
	quietMax   = 45 * time.Second
)

// waitQuiet waits until this process uses less than cores over a second,
// or for at most limit; it returns how long it waited, in seconds.
func waitQuiet(ctx context.Context, cores float64, limit time.Duration) float64 {
	start := time.Now()
	for time.Since(start) < limit && ctx.Err() == nil {
		c0, t0 := cpuTime(), time.Now()
		sleepCtx(ctx, time.Second)
		if (cpuTime()-c0).Seconds()/time.Since(t0).Seconds() < cores {
			break
		}
	}
	return time.Since(start).Seconds()
}

// searchBounds are the highest rate that passed below the lowest that
// failed (0 when none did); of the steps played twice, the second counts.
func searchBounds(steps []ViewStep) (pass, fail float64) {
	last := map[float64]bool{}
	for _, st := range steps {
		last[st.Rate] = st.Pass
	}
	for r, ok := range last {
		if !ok && (fail == 0 || r < fail) {
			fail = r
		}
	}
	for r, ok := range last {
		if ok && (fail == 0 || r < fail) {
			pass = max(pass, r)
		}
	}
	return pass, fail
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
