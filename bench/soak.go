package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/shardproc"
	"github.com/shardchat/shard/protocol"
)

// The soak (`bench --soak D`): a local cluster under churn for D. Users
// connect, join a room, chat for a few seconds, disconnect and come back;
// every --soak-restart the last node is drained (SIGTERM) and started
// again. Every 10 s it prints each node's RSS, goroutines, open files and
// heap, and at the end the slope of each per 10 minutes: a slope past its
// bound on a node that ran throughout is a leak, and bench exits 1.

const (
	// soakScrapeEvery is how often the nodes' /metrics are read; each
	// printed point is the lowest of its window's readings, the level the
	// figure falls back to between bursts (the heap just after a GC, the
	// goroutines between connections), which a leak raises and noise
	// does not.
	soakScrapeEvery = 2 * time.Second
	// soakPointEvery is the printed and judged resolution.
	soakPointEvery = 10 * time.Second
	// soakSession bounds one connection's life: long enough to join and
	// chat, short enough that every user connects dozens of times an hour.
	soakSessionMin, soakSessionMax = 2 * time.Second, 10 * time.Second
	// soakPause is the most a user stays away between sessions.
	soakPause = time.Second
	// soakAnswerTimeout bounds the wait for one answer: a node answers in
	// milliseconds, a drain hands a send over within --drain-timeout (10 s
	// by default) and the client resends it on its next connection.
	soakAnswerTimeout = 15 * time.Second
)

// soakRun is one soak: the cluster, the users and what they saw.
type soakRun struct {
	cfg   *Config
	out   io.Writer
	prog  *progress
	start time.Time
	procs []*shardproc.Process
	urls  []string

	mu       sync.Mutex
	answers  map[string]int // sends by outcome: an ack status, an error code, closed, unanswered
	received int            // messages delivered to the users
	connects int
	restarts int
	trends   map[string]*trend // by node name
}

// runSoak is `bench --soak D`: exit 0, or 1 on a leak or a failure.
func runSoak(ctx context.Context, cfg *Config, stdout, stderr io.Writer) int {
	s := &soakRun{cfg: cfg, out: stdout, prog: newProgress(stderr, cfg.Progress),
		answers: map[string]int{}, trends: map[string]*trend{}}
	verdict, err := s.run(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "bench: soak: %v\n", err)
		return 1
	}
	if len(verdict) > 0 {
		for _, v := range verdict {
			fmt.Fprintf(stderr, "bench: soak: %s\n", v)
		}
		return 1
	}
	return 0
}

// run starts the cluster, runs the churn, the sampler and the restarts for
// the soak's duration, and returns what it found wrong.
func (s *soakRun) run(ctx context.Context) ([]string, error) {
	cfg := s.cfg
	dir, err := os.MkdirTemp("", "shard-soak-")
	if err != nil {
		return nil, err
	}
	bin := cfg.ShardBin
	if bin == "" {
		s.prog.log("building cmd/shard")
		if bin, err = buildShard(ctx, dir); err != nil {
			return nil, err
		}
	}
	s.procs, err = startCluster(ctx, bin, dir, cfg.Nodes, cfg.Routing, cfg)
	if err != nil {
		return nil, fmt.Errorf("start the cluster (logs in %s): %w", dir, err)
	}
	keep := false
	defer func() {
		stopCluster(s.procs)
		if keep || cfg.KeepLogs {
			s.prog.log("node logs kept in " + dir)
		} else {
			os.RemoveAll(dir)
		}
	}()
	s.urls, _ = targets(s.procs)
	fmt.Fprintf(s.out, "soak: %d nodes, %d users, %.0f msg/s, %s; %s drained and restarted every %s; figures are each 10 s's lowest\n",
		cfg.Nodes, cfg.Users, cfg.Rate, cfg.Soak, s.procs[len(s.procs)-1].Name, cfg.SoakRestart)

	s.start = time.Now()
	runCtx, stop := context.WithTimeout(ctx, cfg.Soak)
	defer stop()
	var wg sync.WaitGroup
	for i := range cfg.Users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.user(runCtx, i)
		}()
	}
	restartErr := make(chan error, 1)
	go func() { restartErr <- s.restartEvery(runCtx) }()
	s.sample(runCtx)
	wg.Wait()
	err = <-restartErr
	if ctx.Err() != nil {
		keep = true
		return nil, ctx.Err()
	}
	if err != nil {
		keep = true
		return nil, err
	}
	verdict := s.report()
	keep = len(verdict) > 0
	return verdict, nil
}

// restartEvery drains the last node and starts it again every SoakRestart.
func (s *soakRun) restartEvery(ctx context.Context) error {
	tick := time.NewTicker(s.cfg.SoakRestart)
	defer tick.Stop()
	last := len(s.procs) - 1
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		p := s.procs[last]
		p.Signal(syscall.SIGTERM)
		code := p.Wait(stopTimeout)
		if code == -1 {
			p.Signal(syscall.SIGKILL)
			p.Wait(stopTimeout)
		}
		np, err := shardproc.Start(p.Spec)
		if err != nil {
			return fmt.Errorf("restart %s: %w", p.Name, err)
		}
		s.mu.Lock()
		s.procs[last] = np
		s.mu.Unlock()
		// Waited for without ctx: a soak that ends meanwhile stops a node
		// that is whole, not one half started.
		if err := shardproc.WaitReady(context.Background(), readyTimeout, np); err != nil {
			return fmt.Errorf("restart %s: %w", p.Name, err)
		}
		if err := shardproc.WaitRing(context.Background(), readyTimeout, len(s.procs), s.procs...); err != nil {
			return fmt.Errorf("after restarting %s: %w", p.Name, err)
		}
		s.mu.Lock()
		s.restarts++
		n := s.restarts
		s.mu.Unlock()
		drain := "drained"
		if code != 0 {
			drain = fmt.Sprintf("drain exited %d", code)
		}
		s.prog.log(fmt.Sprintf("%8s  %s %s and restarted (%d)", s.elapsed(), p.Name, drain, n))
	}
}

func (s *soakRun) elapsed() string { return time.Since(s.start).Truncate(time.Second).String() }

// user is one user's life: sessions separated by short absences.
func (s *soakRun) user(ctx context.Context, i int) {
	rng := rand.New(rand.NewPCG(s.cfg.Seed, uint64(i)))
	for ctx.Err() == nil {
		s.session(ctx, rng, i)
		pause := time.NewTimer(time.Duration(rng.Int64N(int64(soakPause))))
		select {
		case <-ctx.Done():
		case <-pause.C:
		}
		pause.Stop()
	}
}

func soakUser(i int) string { return fmt.Sprintf("soak%d", i) }

// session connects user i to a random node (the others as fallbacks),
// joins a room, sends at the user's share of the rate for a few seconds,
// and disconnects.
func (s *soakRun) session(ctx context.Context, rng *rand.Rand, i int) {
	cfg := s.cfg
	first := rng.IntN(len(s.urls))
	o := client.Options{URL: s.urls[first], User: soakUser(i), Reconnect: true,
		BackoffMin: 50 * time.Millisecond, BackoffMax: time.Second}
	for k := 1; k < len(s.urls); k++ {
		o.Fallbacks = append(o.Fallbacks, s.urls[(first+k)%len(s.urls)])
	}
	dctx, cancel := context.WithTimeout(ctx, soakAnswerTimeout)
	cl, err := client.Dial(dctx, o)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			s.count("dial failed: " + outcome(err))
		}
		return
	}
	defer cl.Close()
	s.mu.Lock()
	s.connects++
	s.mu.Unlock()
	go func() {
		for range cl.Messages() {
			s.mu.Lock()
			s.received++
			s.mu.Unlock()
		}
	}()
	room := ""
	if cfg.Rooms > 0 {
		room = fmt.Sprintf("soakroom%d", rng.IntN(cfg.Rooms))
		jctx, cancel := context.WithTimeout(ctx, soakAnswerTimeout)
		err := cl.Join(jctx, room)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				s.count("join: " + outcome(err))
			}
			return
		}
	}
	every := time.Duration(float64(cfg.Users) / cfg.Rate * float64(time.Second))
	end := time.Now().Add(soakSessionMin + time.Duration(rng.Int64N(int64(soakSessionMax-soakSessionMin))))
	next := time.Now().Add(time.Duration(rng.Int64N(int64(every) + 1)))
	body := strings.Repeat("x", cfg.Body)
	for {
		wait := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			wait.Stop()
			return
		case <-wait.C:
		}
		if time.Now().After(end) {
			return
		}
		next = next.Add(every)
		sctx, cancel := context.WithTimeout(ctx, soakAnswerTimeout)
		var ack client.Ack
		if room != "" && rng.Float64() >= cfg.Mix {
			ack, err = cl.SendRoom(sctx, room, body)
		} else {
			ack, err = cl.Send(sctx, soakUser(rng.IntN(cfg.Users)), body)
		}
		cancel()
		switch {
		case err == nil:
			s.count(ack.Status)
		case ctx.Err() != nil: // the soak ended, not the answer
			return
		default:
			s.count(outcome(err))
		}
	}
}

// outcome names an error as the soak counts it.
func outcome(err error) string {
	var se *client.Error
	var he *client.HandshakeError
	switch {
	case errors.As(err, &se):
		return se.Code
	case errors.As(err, &he):
		return fmt.Sprintf("HTTP %d", he.Status)
	case errors.Is(err, client.ErrClosed):
		return "closed"
	case errors.Is(err, context.DeadlineExceeded):
		return "unanswered"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused" // the node is restarting
	}
	return "error"
}

func (s *soakRun) count(what string) {
	s.mu.Lock()
	s.answers[what]++
	s.mu.Unlock()
}

// sample reads every node's figures every soakScrapeEvery and prints each
// window's lowest every soakPointEvery, until ctx ends.
func (s *soakRun) sample(ctx context.Context) {
	scrapeTick := time.NewTicker(soakScrapeEvery)
	defer scrapeTick.Stop()
	low := map[string]figures{}
	windowEnd := s.start.Add(soakPointEvery)
	for {
		select {
		case <-ctx.Done():
			return
		case <-scrapeTick.C:
		}
		s.mu.Lock()
		procs := append([]*shardproc.Process(nil), s.procs...)
		s.mu.Unlock()
		for _, p := range procs {
			// A node being restarted has no figures for a moment; the
			// restarted one is printed, not judged.
			sm, err := scrape(ctx, node{Name: p.Name, HTTP: "http://" + p.HTTP})
			if err != nil {
				continue
			}
			f := figures{RSS: sm.RSS, Goroutines: sm.Goroutines, FDs: sm.OpenFDs, Heap: sm.HeapAlloc}
			if l, ok := low[p.Name]; ok {
				f = f.min(l)
			}
			low[p.Name] = f
		}
		if time.Now().Before(windowEnd) {
			continue
		}
		windowEnd = windowEnd.Add(soakPointEvery)
		at := time.Since(s.start)
		s.printPoint(at, procs, low)
		for name, f := range low {
			s.trendOf(name).add(at, f)
		}
		clear(low)
	}
}

func (s *soakRun) trendOf(name string) *trend {
	t := s.trends[name]
	if t == nil {
		t = &trend{}
		s.trends[name] = t
	}
	return t
}

func (s *soakRun) printPoint(at time.Duration, procs []*shardproc.Process, low map[string]figures) {
	s.mu.Lock()
	sent, received, connects := 0, s.received, s.connects
	for _, n := range s.answers {
		sent += n
	}
	s.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "%8s  sends %d, received %d, connects %d\n", at.Truncate(time.Second), sent, received, connects)
	for _, p := range procs {
		f, ok := low[p.Name]
		if !ok {
			fmt.Fprintf(&b, "          %-4s (no figures: restarting)\n", p.Name)
			continue
		}
		fmt.Fprintf(&b, "          %-4s %s\n", p.Name, f)
	}
	s.prog.clear()
	fmt.Fprint(s.out, b.String())
}

// report prints the answers and the slopes, and returns the leaks and
// failures it found.
func (s *soakRun) report() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var verdict []string
	total := 0
	var kinds []string
	for k, n := range s.answers {
		total += n
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	fmt.Fprintf(s.out, "\nsoak: %s, %d connects, %d restarts of %s, %d sends, %d messages received\n",
		s.cfg.Soak, s.connects, s.restarts, s.procs[len(s.procs)-1].Name, total, s.received)
	for _, k := range kinds {
		fmt.Fprintf(s.out, "  %-24s %d\n", k, s.answers[k])
	}
	acked := s.answers[protocol.StatusDelivered] + s.answers[protocol.StatusSent] +
		s.answers[protocol.StatusOffline] + s.answers[protocol.StatusStored]
	if acked == 0 {
		verdict = append(verdict, "no send was acked: the soak measured nothing")
	}
	warmup := soakWarmup(s.cfg.Soak)
	fmt.Fprintf(s.out, "\nslope per 10 minutes after the first %s (least squares over the 10 s points):\n", warmup)
	row := func(name string, v [4]string, note string) {
		fmt.Fprintf(s.out, "  %-6s %12s %12s %12s %12s%s\n", name, v[0], v[1], v[2], v[3], note)
	}
	row("node", [4]string{"rss", "goroutines", "open files", "heap"}, "")
	for i, p := range s.procs {
		t := s.trends[p.Name]
		if t == nil {
			continue
		}
		sl, span, ok := t.slopes(warmup)
		if !ok {
			fmt.Fprintf(s.out, "  %-6s (too few points after the warm-up)\n", p.Name)
			continue
		}
		if i == len(s.procs)-1 {
			row(p.Name, sl.slopeString(), "  (restarted: not judged)")
			continue
		}
		row(p.Name, sl.slopeString(), "")
		for _, leak := range leaks(sl, span) {
			verdict = append(verdict, fmt.Sprintf("%s: %s", p.Name, leak))
		}
	}
	row("bound", leakBound.slopeString(), "")
	return verdict
}
