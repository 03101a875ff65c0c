package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

const (
	// startDelay is how far ahead of now a run's schedule starts, so that
	// every worker has its command before the first send is due.
	startDelay = 500 * time.Millisecond
	// resultSlack is how long after a run's grace the parent waits for the
	// workers' results: finishing up the accounting of a large run takes a
	// moment, a worker that takes longer is stuck.
	resultSlack = 30 * time.Second
	// stepPause separates the steps of --max, so that queues a failed step
	// left behind drain before the next one.
	stepPause = time.Second
	// bisections are the refinement steps of --max once a rate has failed.
	bisections = 2
)

// caseSpec is one cluster configuration to measure.
type caseSpec struct {
	Nodes   int    // local cluster size; 0 with --url
	Routing string // owner, broadcast; as reported with --url
}

// echoRouting names the case of the echo baseline (echo.go).
const echoRouting = "echo"

func (c caseSpec) label() string {
	if c.Routing == echoRouting {
		return echoRouting
	}
	if c.Nodes == 0 {
		return "target"
	}
	return fmt.Sprintf("%s-n%d", c.Routing, c.Nodes)
}

// bench runs the cases of one invocation.
type bench struct {
	cfg   *Config
	prog  *progress
	runID string
	tmp   string // node logs and the built binary
	bin   string
	phase uint32
}

func newRunID() string {
	const digits = "0123456789abcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 6)
	rand.Read(b)
	for i := range b {
		b[i] = digits[int(b[i])%len(digits)]
	}
	return string(b)
}

// cases lists what to measure: every size of the sweep, each with owner
// then broadcast for --compare.
func (b *bench) cases() []caseSpec {
	if !b.cfg.Local() {
		return []caseSpec{{}}
	}
	sizes := b.cfg.Sizes
	if len(sizes) == 0 {
		sizes = []int{b.cfg.Nodes}
	}
	routings := []string{b.cfg.Routing}
	if b.cfg.Compare {
		routings = []string{"owner", "broadcast"}
	}
	var cs []caseSpec
	if b.cfg.Baseline {
		cs = append(cs, caseSpec{Nodes: 1, Routing: echoRouting})
	}
	for _, n := range sizes {
		for _, r := range routings {
			cs = append(cs, caseSpec{Nodes: n, Routing: r})
		}
	}
	return cs
}

// execute runs every case and assembles the report.
func (b *bench) execute(ctx context.Context, nofile uint64) (*Report, error) {
	cfg := b.cfg
	rep := &Report{
		Machine: Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version(), NofileMax: nofile},
		Args:    os.Args[1:],
		Workload: Workload{
			Users: cfg.Users, ConnsPerUser: cfg.ConnsPerUser, Conns: cfg.Conns(), Rooms: cfg.Rooms, RoomSize: cfg.RoomSize,
			Groups: cfg.Groups, GroupSize: cfg.GroupSize, Rate: cfg.Rate, Mix: cfg.Mix, GroupMix: cfg.GroupMix, Body: cfg.Body, Duration: cfg.Duration.Seconds(),
			Warmup: cfg.Warmup.Seconds(), Grace: cfg.Grace.Seconds(), Procs: cfg.Procs, Seed: cfg.Seed,
		},
	}
	if cfg.Local() {
		dir, err := os.MkdirTemp("", "shard-bench-")
		if err != nil {
			return nil, err
		}
		b.tmp = dir
		b.bin = cfg.ShardBin
		if b.bin == "" {
			b.prog.log("building cmd/shard")
			if b.bin, err = buildShard(ctx, dir); err != nil {
				return nil, err
			}
		}
	}
	failed := false
	for _, cs := range b.cases() {
		cr, err := b.runCase(ctx, cs)
		if cr != nil {
			rep.Cases = append(rep.Cases, cr)
		}
		if err != nil {
			failed = true
			rep.Errors = append(rep.Errors, fmt.Sprintf("%s: %v", cs.label(), err))
			if cr != nil {
				cr.Error = err.Error()
			}
			if ctx.Err() != nil {
				break
			}
		}
	}
	b.prog.clear()
	echoRounds(rep.Cases)
	// Owner against broadcast, size by size.
	for i := 0; i+1 < len(rep.Cases); i++ {
		o, x := rep.Cases[i], rep.Cases[i+1]
		if o.Routing == "owner" && x.Routing == "broadcast" && o.Nodes == x.Nodes && cfg.Compare {
			if c := compare(o, x); c != nil {
				rep.Compare = append(rep.Compare, c)
			}
		}
	}
	if cfg.Chart != "" {
		files, err := writeCharts(cfg.Chart, rep)
		rep.Charts = files
		if err != nil {
			rep.Errors = append(rep.Errors, "charts: "+err.Error())
		}
	}
	if b.tmp != "" {
		if failed || cfg.KeepLogs {
			rep.Logs = b.tmp
			if failed {
				rep.Errors = append(rep.Errors, "node logs kept in "+b.tmp)
			}
		} else {
			os.RemoveAll(b.tmp)
		}
	}
	for _, r := range rep.Cases {
		for _, run := range r.Runs {
			for i := range run.Timeline {
				run.Timeline[i].Hist = ""
			}
		}
	}
	return rep, nil
}

// workerConfigs splits the workload over the client processes.
// With echo, the workers expect no deliveries: the echo answers the sender
// only.
func (b *bench) workerConfigs(urls []string, echo bool) []workerConfig {
	cfg := b.cfg
	out := make([]workerConfig, cfg.Procs)
	for i := range out {
		out[i] = workerConfig{
			Index: i, Procs: cfg.Procs, RunID: b.runID, URLs: urls,
			SrcBase: cfg.SrcBase, ConnsPerSrc: cfg.ConnsPerSrc,
			Users: cfg.Users, ConnsPerUser: cfg.ConnsPerUser, Rooms: cfg.Rooms, RoomSize: cfg.RoomSize,
			Groups: cfg.Groups, GroupSize: cfg.GroupSize, Mix: cfg.Mix, GroupMix: cfg.GroupMix, Body: cfg.Body, Seed: cfg.Seed, DialConcurrency: cfg.DialConcurrency,
			Echo: echo, Remote: cfg.Remote,
		}
	}
	return out
}

// workerSet is the parent's view of the running workers.
type workerSet struct {
	procs  []*workerProc
	events chan event
	users  []int // users per worker, for its share of the rate
	up     []int // connections up per worker, as last reported
	exited []bool
}

// wait collects one event of type typ from every worker, showing progress
// meanwhile. A worker that exits first is an error.
func (s *workerSet) wait(ctx context.Context, typ string, timeout time.Duration, onProgress func(int, *progressReport)) ([]event, error) {
	got := make([]event, len(s.procs))
	have := make([]bool, len(s.procs))
	n := 0
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for n < len(s.procs) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			return nil, fmt.Errorf("workers silent for %s waiting for %s", timeout, typ)
		case e := <-s.events:
			switch e.Type {
			case "progress":
				if onProgress != nil && e.Progress != nil {
					onProgress(e.Worker, e.Progress)
				}
			case "exit":
				s.exited[e.Worker] = true
				return nil, fmt.Errorf("worker %d ended before its %s: %s", e.Worker, typ, e.Error)
			case typ:
				if !have[e.Worker] {
					have[e.Worker] = true
					got[e.Worker] = e
					n++
				}
			}
		}
	}
	return got, nil
}

// stop ends every worker, draining their events meanwhile.
func (s *workerSet) stop() {
	done := make(chan struct{})
	go func() {
		stopWorkers(s.procs, 30*time.Second)
		close(done)
	}()
	for {
		select {
		case <-done:
			return
		case <-s.events:
		}
	}
}

// runCase measures one cluster: start it (or find it), connect the clients,
// run the schedule once or search for the highest rate, and stop it all.
func (b *bench) runCase(ctx context.Context, cs caseSpec) (*CaseReport, error) {
	cfg := b.cfg
	cr := &CaseReport{Label: cs.label(), Nodes: cs.Nodes, Routing: cs.Routing}
	var urls []string
	var nodes []node
	if cs.Routing == echoRouting {
		b.prog.log("[echo] starting the echo server")
		e, err := startEcho(ctx, b.tmp)
		if err != nil {
			return cr, err
		}
		defer e.stop()
		urls = []string{"ws://" + e.addr + "/ws"}
		nodes = []node{{Name: echoRouting, HTTP: "http://" + e.addr, PID: e.cmd.Process.Pid}}
	} else if cfg.Local() {
		b.prog.log(fmt.Sprintf("[%s] starting %d nodes", cr.Label, cs.Nodes))
		dir := filepath.Join(b.tmp, cr.Label)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return cr, err
		}
		cl, err := startCluster(ctx, b.bin, dir, cs.Nodes, cs.Routing, cfg)
		if err != nil {
			return cr, err
		}
		defer func() {
			b.prog.log(fmt.Sprintf("[%s] stopping the nodes", cr.Label))
			stopCluster(cl)
		}()
		urls, nodes = targets(cl)
	} else {
		urls = cfg.URLs
		var err error
		if nodes, err = discoverNodes(ctx, cfg.MetricsURL, urls); err != nil {
			return cr, err
		}
		cr.Nodes = len(nodes)
		if v, err := fetchCluster(ctx, nodes[0].HTTP); err == nil {
			cr.Routing = v.Routing
		}
	}
	cr.Targets = urls
	empty, err := scrapeAll(ctx, nodes)
	if err != nil {
		return cr, fmt.Errorf("read the nodes' counters before connecting: %w", err)
	}

	// Clients.
	cfgs := b.workerConfigs(urls, cs.Routing == echoRouting)
	set := &workerSet{events: make(chan event, 1024), exited: make([]bool, len(cfgs))}
	for _, wc := range cfgs {
		s := split(wc.Users, wc.Rooms, wc.Groups, wc.ConnsPerUser, wc.Index, wc.Procs)
		set.users = append(set.users, s.Users[1]-s.Users[0])
	}
	procs, err := startWorkers(cfgs, cfg.Procs == 1, set.events)
	set.procs = procs
	defer func() {
		b.prog.log(fmt.Sprintf("[%s] closing %d connections", cr.Label, cfg.Conns()))
		set.stop()
	}()
	if err != nil {
		return cr, err
	}
	up := make([]int, len(cfgs))
	setupTimeout := time.Minute + time.Duration(cfg.Conns())*time.Millisecond
	readies, err := set.wait(ctx, "ready", setupTimeout, func(w int, p *progressReport) {
		up[w] = p.Up
		b.prog.show(fmt.Sprintf("[%s] connecting: %d/%d", cr.Label, sumInts(up), cfg.Conns()))
	})
	if err != nil {
		return cr, err
	}
	cr.Connections = mergeReady(readies)
	set.up = make([]int, len(readies))
	for i, e := range readies {
		set.up[i] = e.Ready.Established
	}
	b.prog.log(fmt.Sprintf("[%s] %d/%d connections in %.2f s (%.0f/s), %d room joins in %.2f s, %d groups created in %.2f s",
		cr.Label, cr.Connections.Established, cr.Connections.Wanted, cr.Connections.SetupSeconds,
		cr.Connections.SetupRate, cr.Connections.Joins, cr.Connections.JoinSeconds, cr.Connections.Groups, cr.Connections.GroupSeconds))
	idle, err := scrapeAll(ctx, nodes)
	if err != nil {
		return cr, fmt.Errorf("read the nodes' counters after connecting: %w", err)
	}
	for i, n := range nodes {
		m := NodeMemory{Name: n.Name, Connections: idle[i].Connections, RSSEmpty: empty[i].RSS, RSSIdle: idle[i].RSS,
			AnonEmpty: empty[i].Anon, AnonIdle: idle[i].Anon}
		if c := m.Connections; c > 0 {
			m.BytesPerConn = m.grown() / c
			m.HeapPerConn = (idle[i].HeapInuse - empty[i].HeapInuse) / c
			m.StackPerConn = (idle[i].StackInuse - empty[i].StackInuse) / c
			m.GoroutinesPerConn = (idle[i].Goroutines - empty[i].Goroutines) / c
		}
		cr.Memory = append(cr.Memory, m)
	}

	if !cfg.Max {
		run, err := b.run(ctx, set, nodes, cr.Label, cfg.Rate)
		if run != nil {
			cr.Runs = append(cr.Runs, run)
		}
		return cr, err
	}
	return cr, b.maxSearch(ctx, set, nodes, cr)
}

func sumInts(v []int) int {
	n := 0
	for _, x := range v {
		n += x
	}
	return n
}

// mergeReady adds up the workers' setup reports. The setup rate counts from
// the first dial of any worker to the last connection of any.
func mergeReady(evs []event) ConnReport {
	c := ConnReport{FailReasons: map[string]int{}, PerNode: map[string]int{}}
	var first, last int64
	for i, e := range evs {
		r := e.Ready
		c.Wanted += r.Wanted
		c.Established += r.Established
		c.Failed += r.Failed
		c.Joins += r.Joins
		c.JoinsFailed += r.JoinsFailed
		c.JoinSeconds = math.Max(c.JoinSeconds, r.JoinSeconds)
		c.Groups += r.Groups
		c.GroupsFailed += r.GroupsFailed
		c.GroupSeconds = math.Max(c.GroupSeconds, r.GroupSeconds)
		for k, v := range r.FailReasons {
			c.FailReasons[k] += v
		}
		for k, v := range r.PerNode {
			c.PerNode[k] += v
		}
		if i == 0 || r.DialStart < first {
			first = r.DialStart
		}
		last = max(last, r.DialEnd)
	}
	c.SetupSeconds = time.Duration(last - first).Seconds()
	if c.SetupSeconds > 0 {
		c.SetupRate = float64(c.Established) / c.SetupSeconds
	}
	return c
}

// run plays the schedule once at rate on every worker, reads the nodes'
// counters at the edges of the measured window, and reports.
func (b *bench) run(ctx context.Context, set *workerSet, nodes []node, label string, rate float64) (*RunReport, error) {
	cfg := b.cfg
	b.phase++
	phase := b.phase
	startAt := time.Now().Add(startDelay)
	for i, wp := range set.procs {
		share := rate * float64(set.users[i]) / float64(cfg.Users)
		cmd := &runCmd{Phase: phase, Rate: share, Warmup: cfg.Warmup, Duration: cfg.Duration, Grace: cfg.Grace, StartAt: startAt.UnixNano()}
		if err := wp.send(command{Cmd: "run", Run: cmd}); err != nil {
			return nil, err
		}
	}
	windowStart := time.NewTimer(time.Until(startAt.Add(cfg.Warmup)))
	windowEnd := time.NewTimer(time.Until(startAt.Add(cfg.Warmup + cfg.Duration)))
	defer windowStart.Stop()
	defer windowEnd.Stop()
	deadline := time.NewTimer(time.Until(startAt.Add(cfg.Warmup + cfg.Duration + cfg.Grace + resultSlack)))
	defer deadline.Stop()

	latest := make([]progressReport, len(set.procs))
	for i := range latest {
		latest[i].Up = set.up[i]
	}
	show := func() {
		var p progressReport
		for _, x := range latest {
			p.Sent += x.Sent
			p.Delivered += x.Delivered
			p.Answered += x.Answered
			p.Refused += x.Refused
			p.Up += x.Up
			p.RecentP99 = max(p.RecentP99, x.RecentP99)
		}
		el := time.Since(startAt)
		stage := "warm-up"
		switch {
		case el >= cfg.Warmup+cfg.Duration:
			stage = "grace"
		case el >= cfg.Warmup:
			stage = fmt.Sprintf("measuring %.0f/%.0fs", (el - cfg.Warmup).Seconds(), cfg.Duration.Seconds())
		}
		b.prog.show(fmt.Sprintf("[%s] %.0f msg/s · %s · sent %d · answered %d · delivered %d · errors %d · p99 last 1s %.1f ms · conns up %d/%d",
			label, rate, stage, p.Sent, p.Answered, p.Delivered, p.Refused, float64(p.RecentP99)/1e6, p.Up, cfg.Conns()))
	}

	var before, after []sample
	var scrapeErr error
	var load float64
	results := make([]*workerResult, len(set.procs))
	n := 0
	for n < len(set.procs) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			return nil, fmt.Errorf("workers did not report run %d in time", phase)
		case <-windowStart.C:
			before, scrapeErr = scrapeAll(ctx, nodes)
		case <-windowEnd.C:
			load = loadAvg()
			if scrapeErr == nil {
				after, scrapeErr = scrapeAll(ctx, nodes)
			}
		case e := <-set.events:
			switch e.Type {
			case "progress":
				if e.Progress != nil && e.Progress.Phase == phase {
					latest[e.Worker] = *e.Progress
					set.up[e.Worker] = e.Progress.Up
					show()
				}
			case "exit":
				set.exited[e.Worker] = true
				return nil, fmt.Errorf("worker %d ended during run %d: %s", e.Worker, phase, e.Error)
			case "result":
				if e.Result != nil && e.Result.Phase == phase && results[e.Worker] == nil {
					results[e.Worker] = e.Result
					n++
				}
			}
		}
	}
	r, err := buildRun(cfg, phase, rate, results)
	if err != nil {
		return nil, err
	}
	r.LoadAvg = load
	if scrapeErr == nil && (before == nil || after == nil) {
		scrapeErr = errors.New("the window's edges were not read")
	}
	if scrapeErr != nil {
		r.ClusterError = scrapeErr.Error()
	} else {
		r.Cluster = clusterStats(nodes, before, after)
	}
	b.prog.log(fmt.Sprintf("[%s] %.0f msg/s: delivered %.0f/s, p50 %.2f ms, p99 %.2f ms, max %.2f ms, lost %d, errors %d",
		label, rate, r.DeliveredRate, r.Latency.P50, r.Latency.P99, r.Latency.Max, r.Counts.Lost, sumMap(r.Counts.Errors)))
	return r, nil
}

// buildRun merges the workers' results of one run.
func buildRun(cfg *Config, phase uint32, rate float64, results []*workerResult) (*RunReport, error) {
	r := &RunReport{Phase: phase, OfferedRate: rate, WindowSeconds: cfg.Duration.Seconds()}
	lat, fromSent, ack, lag := newHist(), newHist(), newHist(), newHist()
	perSec := map[int]*TimelinePoint{}
	secHists := map[int]*hdrhistogram.Histogram{}
	for _, res := range results {
		r.Counts.add(res.Counts)
		r.Disconnects += res.Disconnects
		r.Reconnects += res.Reconnects
		r.Stale += res.Stale
		r.GeneratorCPU += res.CPUSeconds
		for k, v := range res.CloseCodes {
			if r.CloseCodes == nil {
				r.CloseCodes = map[string]int64{}
			}
			r.CloseCodes[k] += v
		}
		for _, x := range []struct {
			dst *hdrhistogram.Histogram
			s   string
		}{{lat, res.Latency}, {fromSent, res.FromSent}, {ack, res.AckLatency}, {lag, res.SendLag}} {
			if err := mergeEncoded(x.dst, x.s); err != nil {
				return nil, err
			}
		}
		for _, tp := range res.Timeline {
			p := perSec[tp.Second]
			if p == nil {
				p = &TimelinePoint{Second: tp.Second}
				perSec[tp.Second] = p
				secHists[tp.Second] = newTimelineHist()
			}
			p.Delivered += tp.Delivered
			if err := mergeEncoded(secHists[tp.Second], tp.Hist); err != nil {
				return nil, err
			}
		}
	}
	r.Latency, r.FromSent, r.AckLatency, r.SendLag = summarize(lat), summarize(fromSent), summarize(ack), summarize(lag)
	secsList := make([]int, 0, len(perSec))
	for s := range perSec {
		secsList = append(secsList, s)
	}
	sort.Ints(secsList)
	for _, s := range secsList {
		p := perSec[s]
		l := summarize(secHists[s])
		p.P50, p.P99, p.Max = l.P50, l.P99, l.Max
		r.Timeline = append(r.Timeline, *p)
	}
	r.SentRate = float64(r.Counts.Sent) / r.WindowSeconds
	r.DeliveredRate = float64(r.Counts.Delivered) / r.WindowSeconds
	return r, nil
}

// clusterStats turns two readings of every node into the window's figures.
func clusterStats(nodes []node, before, after []sample) *ClusterStats {
	cs := &ClusterStats{}
	byKind, replies := map[string]float64{}, map[string]float64{}
	var readCalls, writeCalls, wakeups float64
	addDeltas := func(dst, before, after map[string]float64) {
		for k, v := range after {
			dst[k] += v - before[k]
		}
	}
	for i, n := range nodes {
		a, b := before[i], after[i]
		nr := NodeRun{
			Name:         n.Name,
			Connections:  b.Connections,
			ChatMessages: b.Chat - a.Chat,
			PeerMessages: b.Peer - a.Peer,
			Deliveries:   b.Deliveries - a.Deliveries,
			CPUSeconds:   b.CPU - a.CPU,
			RSS:          b.RSS,
		}
		addDeltas(byKind, a.PeerByKind, b.PeerByKind)
		addDeltas(replies, a.RepliesByKind, b.RepliesByKind)
		cs.ChatMessages += nr.ChatMessages
		cs.PeerMessages += nr.PeerMessages
		cs.Deliveries += nr.Deliveries
		cs.CPUSeconds += nr.CPUSeconds
		readCalls += b.ReadCalls - a.ReadCalls
		writeCalls += b.WriteCalls - a.WriteCalls
		wakeups += b.Wakeups - a.Wakeups
		cs.Nodes = append(cs.Nodes, nr)
	}
	cs.ReadCallsPerChat = ratio(readCalls, cs.ChatMessages)
	cs.WriteCallsPerChat = ratio(writeCalls, cs.ChatMessages)
	cs.WakeupsPerChat = ratio(wakeups, cs.ChatMessages)
	cs.PeerPerChat = ratio(cs.PeerMessages, cs.ChatMessages)
	perChat := func(totals map[string]float64) map[string]float64 {
		out := map[string]float64{}
		for k, v := range totals {
			if v != 0 {
				out[k] = ratio(v, cs.ChatMessages)
			}
		}
		return out
	}
	cs.PeerPerChatByKind, cs.RequestsPerChatByKind = perChat(byKind), perChat(replies)
	cs.CPUPer1k = ratio(cs.CPUSeconds, cs.ChatMessages/1000)
	return cs
}

// sustained judges a --max step: nothing lost, p99 within the bound, and the
// server answered (almost) everything it was offered.
func (b *bench) sustained(r *RunReport) (bool, string) {
	c := r.Counts
	var why []string
	if c.Lost > 0 {
		why = append(why, fmt.Sprintf("%d lost or later than the grace", c.Lost))
	}
	if bound := float64(b.cfg.MaxP99) / 1e6; r.Latency.P99 > bound {
		why = append(why, fmt.Sprintf("p99 %.1f ms > %.0f ms", r.Latency.P99, bound))
	}
	// 0.1 %: a handful of refusals or reconnects is noise, more is a server
	// that sheds load.
	bad := sumMap(c.Errors) + c.Unanswered + c.Closed + c.NotSent
	if c.Offered > 0 && float64(bad) > 0.001*float64(c.Offered) {
		why = append(why, fmt.Sprintf("%d of %d not accepted%s", bad, c.Offered, errs(c.Errors)))
	}
	if c.Expected > 0 && float64(c.ExcludedDropped) > 0.001*float64(c.Expected) {
		why = append(why, fmt.Sprintf("%d deliveries to recipients that dropped", c.ExcludedDropped))
	}
	if len(why) == 0 {
		return true, "ok"
	}
	return false, strings.Join(why, "; ")
}

// maxSearch runs the --max search on a cluster: see rateSearch.
func (b *bench) maxSearch(ctx context.Context, set *workerSet, nodes []node, cr *CaseReport) error {
	cfg := b.cfg
	cr.Max = &MaxReport{P99Bound: float64(cfg.MaxP99) / 1e6, Best: -1}
	search := rateSearch{rate: cfg.Rate, step: cfg.MaxStep, retries: cfg.MaxRetries}
	defer func() { cr.Max.Open = search.bad == 0 }()
	for step := 0; step < cfg.MaxSteps; step++ {
		if step > 0 {
			t := time.NewTimer(stepPause)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
		rate := search.rate
		r, err := b.run(ctx, set, nodes, cr.Label, rate)
		if err != nil {
			return err
		}
		pass, why := b.sustained(r)
		r.Pass, r.Verdict = &pass, why
		cr.Runs = append(cr.Runs, r)
		if pass && rate > cr.Max.Highest {
			cr.Max.Highest, cr.Max.Best = rate, len(cr.Runs)-1
		}
		if !search.next(pass) {
			return nil
		}
	}
	return nil
}

// rateSearch is the --max search. It raises the rate by step while each
// rate is sustained, then bisects between the last good and the first bad
// rate. A rate that fails is run again, up to retries times, and fails only
// if every run fails: on a machine the nodes share with the load generator
// one run can miss the bound on a blip that has nothing to do with the rate.
type rateSearch struct {
	rate, step float64
	retries    int

	good, bad float64 // the highest sustained and the lowest failed rate so far
	bisected  int
	failed    int // runs of the current rate that failed
}

// next takes the verdict on the current rate and moves s.rate to the rate
// to run next, or returns false when the search is over.
func (s *rateSearch) next(pass bool) bool {
	if !pass && s.failed < s.retries {
		s.failed++
		return true
	}
	s.failed = 0
	if pass && s.rate > s.good {
		s.good = s.rate
	}
	if !pass && (s.bad == 0 || s.rate < s.bad) {
		s.bad = s.rate
	}
	switch {
	case s.bad == 0:
		s.rate *= s.step // still rising
	case s.good == 0:
		s.rate /= s.step // even the first rate failed: go down
	case s.bisected < bisections:
		s.bisected++
		s.rate = math.Round((s.good + s.bad) / 2)
	default:
		return false
	}
	return s.rate > 0
}
