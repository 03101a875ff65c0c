package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/gorilla/websocket"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/protocol"
)

// A worker holds the client connections of one slice of the workload (see
// split) and plays its share of the schedule. It runs in a child process of
// its own, or, with --procs 1, inside the bench process.

const (
	// dialTimeout bounds one connection attempt, the welcome included.
	dialTimeout = 10 * time.Second
	// dialAttempts: a refused or failed first dial is retried this often,
	// with a short backoff, before the connection counts as failed.
	dialAttempts = 3
	// joinTimeout bounds one room join, or one group's creation, during
	// setup.
	joinTimeout = 10 * time.Second
	// messageBuffer is each client's Messages() buffer: a goroutine drains
	// it at once, so 64 is plenty; the client's default (1024 messages)
	// would cost about 120 KB per connection up front.
	messageBuffer = 64
	// senders is the number of goroutines that write the scheduled sends:
	// a write that blocks holds up only the messages behind it on its
	// goroutine, and the scheduler's own timeline never moves.
	senders = 4
	// senderQueue bounds the sends waiting for a sender goroutine; when it
	// is full the scheduler waits and its lag shows in the send-lag figure.
	senderQueue = 4096
	// closeConcurrency bounds the clients closed at once at the end.
	closeConcurrency = 256
)

// workerConfig is what the parent gives a worker.
type workerConfig struct {
	Index           int      `json:"index"`
	Procs           int      `json:"procs"`
	RunID           string   `json:"run_id"`
	URLs            []string `json:"urls"`
	SrcBase         string   `json:"src_base"`
	ConnsPerSrc     int      `json:"conns_per_src"`
	Users           int      `json:"users"`
	ConnsPerUser    int      `json:"conns_per_user"`
	Rooms           int      `json:"rooms"`
	RoomSize        int      `json:"room_size"`
	Groups          int      `json:"groups"`
	GroupSize       int      `json:"group_size"`
	Mix             float64  `json:"mix"`
	GroupMix        float64  `json:"group_mix"`
	Body            int      `json:"body"`
	Seed            uint64   `json:"seed"`
	DialConcurrency int      `json:"dial_concurrency"`
	// Echo: the target is the echo baseline, which answers the sender and
	// delivers nothing.
	Echo bool `json:"echo,omitempty"`
	// Remote: direct messages go to users on other nodes (see plan.pick).
	Remote bool `json:"remote,omitempty"`
}

// readyReport is a worker's account of its setup.
type readyReport struct {
	Wanted      int            `json:"wanted"`
	Established int            `json:"established"`
	Failed      int            `json:"failed"`
	FailReasons map[string]int `json:"fail_reasons,omitempty"`
	DialStart   int64          `json:"dial_start"` // unix ns
	DialEnd     int64          `json:"dial_end"`   // unix ns, the last dial's end
	Joins       int            `json:"joins"`
	JoinsFailed int            `json:"joins_failed"`
	JoinSeconds float64        `json:"join_seconds"`
	// Groups is how many groups this worker made (or found made by an
	// earlier case of the same invocation, on the same store).
	Groups       int            `json:"groups"`
	GroupsFailed int            `json:"groups_failed"`
	GroupSeconds float64        `json:"group_seconds"`
	PerNode      map[string]int `json:"per_node"` // welcome.node -> connections
}

// runCmd starts one run on a worker.
type runCmd struct {
	Phase    uint32        `json:"phase"`
	Rate     float64       `json:"rate"` // this worker's share, messages per second
	Warmup   time.Duration `json:"warmup"`
	Duration time.Duration `json:"duration"`
	Grace    time.Duration `json:"grace"`
	StartAt  int64         `json:"start_at"` // unix ns of the schedule's start
}

// workerResult is a worker's account of one run.
type workerResult struct {
	Phase       uint32           `json:"phase"`
	Counts      Counts           `json:"counts"`
	Latency     string           `json:"latency"`
	FromSent    string           `json:"latency_from_sent"`
	AckLatency  string           `json:"ack_latency"`
	SendLag     string           `json:"send_lag"`
	Timeline    []TimelinePoint  `json:"timeline"`
	Dispatched  int64            `json:"dispatched"`
	Disconnects int64            `json:"disconnects"`
	Reconnects  int64            `json:"reconnects"`
	CloseCodes  map[string]int64 `json:"close_codes,omitempty"`
	Stale       int64            `json:"stale"`
	CPUSeconds  float64          `json:"cpu_seconds"` // this process, over the window
	Up          int              `json:"up"`
	GraceUsed   time.Duration    `json:"grace_used"`
}

// progressReport is sent about once a second while a run goes.
type progressReport struct {
	Stage     string        `json:"stage"` // connect, run
	Phase     uint32        `json:"phase"`
	Elapsed   time.Duration `json:"elapsed"`
	Sent      int64         `json:"sent"`
	Answered  int64         `json:"answered"`
	Delivered int64         `json:"delivered"`
	Refused   int64         `json:"refused"`
	Up        int           `json:"up"`
	RecentP99 time.Duration `json:"recent_p99"`
}

type worker struct {
	cfg   workerConfig
	plan  *plan
	conns []*client.Client // nil where the dial failed
	table *connTable
	emit  func(event)

	cur     atomic.Pointer[phase]
	closing atomic.Bool
	recv    sync.WaitGroup // one receiver goroutine per connection

	wbufs sync.Pool // gorilla write buffers, shared by all connections

	disconnects, reconnects, stale atomic.Int64
	codesMu                        sync.Mutex
	codes                          map[string]int64
}

func newWorker(cfg workerConfig, emit func(event)) *worker {
	p := newPlan(cfg, split(cfg.Users, cfg.Rooms, cfg.Groups, cfg.ConnsPerUser, cfg.Index, cfg.Procs))
	return &worker{
		cfg: cfg, plan: p, emit: emit,
		conns: make([]*client.Client, len(p.connUser)),
		table: newConnTable(len(p.connUser)),
		codes: map[string]int64{},
	}
}

// srcAddr is the source address of global connection g: consecutive blocks
// of connsPerSrc connections share one loopback address, since one address
// has only about 28k ephemeral ports.
func srcAddr(base string, connsPerSrc, g int) (net.IP, error) {
	ip := net.ParseIP(base).To4()
	if ip == nil {
		return nil, fmt.Errorf("--src %q is not an IPv4 address", base)
	}
	n := uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
	n += uint32(g / connsPerSrc)
	return net.IPv4(byte(n>>24), byte(n>>16), byte(n>>8), byte(n)), nil
}

// dialer returns the WebSocket dialer bound to src. Small buffers: chat
// frames are small (a longer one still works), and a write buffer is
// borrowed from a shared pool only while a frame is being written.
func (w *worker) dialer(src net.IP) *websocket.Dialer {
	nd := &net.Dialer{
		LocalAddr: &net.TCPAddr{IP: src},
		Timeout:   dialTimeout,
		// Let connect(), not bind(), pick the source port, so that the 28k
		// ports of an address are per destination, not shared by all.
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = setBindNoPort(fd) })
			return errors.Join(err, serr)
		},
	}
	return &websocket.Dialer{
		NetDialContext:   nd.DialContext,
		HandshakeTimeout: dialTimeout,
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
		WriteBufferPool:  &w.wbufs,
	}
}

// setup dials every connection, joins the rooms, and reports.
func (w *worker) setup(ctx context.Context) readyReport {
	n := len(w.conns)
	rep := readyReport{Wanted: n, FailReasons: map[string]int{}, PerNode: map[string]int{}}
	dialers := map[string]*websocket.Dialer{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(1, w.cfg.DialConcurrency))
	start := time.Now()
	var last time.Time
	stop := make(chan struct{})
	ticked := make(chan struct{})
	go func() {
		defer close(ticked)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				w.emit(event{Type: "progress", Progress: &progressReport{Stage: "connect", Up: w.up()}})
			}
		}
	}()
	defer func() { close(stop); <-ticked }()
	for i := 0; i < n; i++ {
		g := w.plan.connFrom + i
		src, err := srcAddr(w.cfg.SrcBase, w.cfg.ConnsPerSrc, g)
		if err != nil {
			rep.Failed++
			rep.FailReasons[err.Error()]++
			continue
		}
		d, ok := dialers[src.String()]
		if !ok {
			d = w.dialer(src)
			dialers[src.String()] = d
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := w.dial(ctx, int32(i), w.cfg.URLs[g%len(w.cfg.URLs)], d)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				rep.Failed++
				rep.FailReasons[failReason(err)]++
				return
			}
			w.conns[i] = c
			rep.Established++
			rep.PerNode[c.Welcome().Node]++
			last = time.Now()
		}()
	}
	wg.Wait()
	rep.DialStart, rep.DialEnd = start.UnixNano(), last.UnixNano()
	if last.IsZero() {
		rep.DialEnd = start.UnixNano()
	}

	joinStart := time.Now()
	for i, c := range w.conns {
		if c == nil {
			continue
		}
		for _, r := range w.plan.connRooms[i] {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				jctx, cancel := context.WithTimeout(ctx, joinTimeout)
				err := c.Join(jctx, w.plan.rooms[r])
				cancel()
				mu.Lock()
				rep.Joins++
				if err != nil {
					rep.JoinsFailed++
					rep.FailReasons["join: "+failReason(err)]++
				}
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	rep.JoinSeconds = time.Since(joinStart).Seconds()

	groupStart := time.Now()
	for j, members := range w.plan.groupUsers {
		creator := w.conns[w.plan.userConns[members[0]][0]]
		if creator == nil {
			rep.GroupsFailed++
			rep.FailReasons["group: its creator is not connected"]++
			continue
		}
		others := make([]string, 0, len(members)-1)
		for _, u := range members[1:] {
			others = append(others, w.plan.users[u])
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			gctx, cancel := context.WithTimeout(ctx, joinTimeout)
			_, err := creator.CreateGroup(gctx, w.plan.groups[j], others...)
			cancel()
			var ce *client.Error
			if errors.As(err, &ce) && ce.Code == protocol.CodeConflict {
				err = nil // made by an earlier case of this invocation: the same members
			}
			mu.Lock()
			if err != nil {
				rep.GroupsFailed++
				rep.FailReasons["group: "+failReason(err)]++
			} else {
				rep.Groups++
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	rep.GroupSeconds = time.Since(groupStart).Seconds()
	return rep
}

// dial opens local connection i, retrying a failed attempt a few times.
func (w *worker) dial(ctx context.Context, i int32, url string, d *websocket.Dialer) (*client.Client, error) {
	o := client.Options{
		URL:           url,
		User:          w.plan.users[w.plan.connUser[i]],
		Dialer:        d,
		Reconnect:     true,
		MessageBuffer: messageBuffer,
		OnState:       func(s client.State) { w.onState(i, s) },
	}
	var err error
	for attempt := 0; attempt < dialAttempts; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(time.Duration(attempt) * 200 * time.Millisecond)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			}
		}
		dctx, cancel := context.WithTimeout(ctx, dialTimeout)
		var c *client.Client
		c, err = client.Dial(dctx, o)
		cancel()
		if err == nil {
			w.recv.Add(1)
			go w.receive(i, c)
			return c, nil
		}
		var he *client.HandshakeError
		if errors.As(err, &he) && he.Status != 503 {
			return nil, err // refused for good
		}
	}
	return nil, err
}

// failReason condenses a dial or join error for the report.
func failReason(err error) string {
	var he *client.HandshakeError
	var ce *client.Error
	s := err.Error()
	switch {
	case errors.As(err, &he):
		return "http " + strconv.Itoa(he.Status) + " " + he.Code
	case errors.As(err, &ce):
		return ce.Code
	case errors.Is(err, syscall.EMFILE):
		return "too many open files"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no free source port (EADDRNOTAVAIL)"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, context.DeadlineExceeded), strings.Contains(s, "timeout"):
		return "timeout"
	}
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

func (w *worker) onState(i int32, s client.State) {
	switch s := s.(type) {
	case client.Connected:
		if epoch, _ := w.table.state(i); epoch > 0 {
			w.reconnects.Add(1)
		}
		w.table.connected(i)
	case client.Disconnected:
		w.table.disconnected(i)
		if w.closing.Load() {
			return
		}
		w.disconnects.Add(1)
		w.codesMu.Lock()
		w.codes[strconv.Itoa(s.CloseCode)]++
		w.codesMu.Unlock()
	}
}

// receive drains connection i's messages into the current phase.
func (w *worker) receive(i int32, c *client.Client) {
	defer w.recv.Done()
	var order orderCheck
	for m := range c.Messages() {
		phase, seq, _, ok := parseBody(m.Body)
		p := w.cur.Load()
		if !ok || p == nil || phase != p.id {
			w.stale.Add(1) // another run's, or not ours
			continue
		}
		if seq >= 0 && seq < int64(len(p.recs)) {
			// The sender is a function of the message number (see pick).
			if !order.see(phase, w.plan.pick(phase, seq).from, seq) {
				p.reordered.Add(1)
			}
		}
		p.received(i, seq, m.Received)
	}
}

// orderCheck checks, for one receiving connection, the promise of
// docs/protocol.md §6.5 that messages from one connection to one recipient
// arrive in the order sent: the schedule numbers messages in the order each
// sender writes them, so from any one sender the numbers must rise. It belongs to the receiving
// goroutine and needs no lock.
type orderCheck struct {
	phase uint32
	last  map[int32]int64 // highest message number seen per sending connection
}

// see records message seq from connection from, and reports false when a
// later message from the same sender came before it.
func (o *orderCheck) see(phase uint32, from int32, seq int64) bool {
	if o.last == nil || o.phase != phase {
		o.phase, o.last = phase, map[int32]int64{}
	}
	if prev, ok := o.last[from]; ok && seq < prev {
		return false
	}
	o.last[from] = seq
	return true
}

// job is one scheduled send.
type job struct {
	seq int64
	pk  pick
}

// run plays cmd's schedule and reports once every answer and delivery is in
// or the grace period is over.
func (w *worker) run(ctx context.Context, cmd runCmd) workerResult {
	sched := schedule{rate: cmd.Rate}
	total := sched.count(cmd.Warmup + cmd.Duration)
	base := time.Now().Add(time.Until(time.Unix(0, cmd.StartAt))) // monotonic
	p := newPhase(cmd.Phase, base, cmd.Warmup, cmd.Duration, total, w.table)
	w.cur.Store(p)
	disc0, reco0, stale0 := w.disconnects.Load(), w.reconnects.Load(), w.stale.Load()
	w.codesMu.Lock()
	codes0 := copyMap(w.codes)
	w.codesMu.Unlock()

	// CPU of this process over the measured window: from its start (a
	// timer) to the end of the schedule, which is the window's end.
	var cpu0 atomic.Int64
	cpu0.Store(int64(cpuTime()))
	t0 := time.AfterFunc(time.Until(base.Add(cmd.Warmup)), func() { cpu0.Store(int64(cpuTime())) })

	var wg sync.WaitGroup
	queues := make([]chan job, senders)
	lags := make([]*hdrhistogram.Histogram, senders)
	for k := range queues {
		queues[k] = make(chan job, senderQueue)
		lags[k] = newHist()
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.sender(p, sched, queues[k], lags[k])
		}()
	}
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		w.progress(p, stopProgress)
	}()

	dispatched := sched.run(ctx, realClock{base}, total, func(i int64, _, _ time.Duration) {
		pk := w.plan.pick(p.id, i)
		queues[int(pk.from)%senders] <- job{seq: i, pk: pk}
	})
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	t0.Stop()
	cpu := cpuTime() - time.Duration(cpu0.Load())

	// Grace: wait, bounded, for the answers and deliveries still on the way.
	windowEnd := base.Add(cmd.Warmup + cmd.Duration)
	deadline := windowEnd.Add(cmd.Grace)
	tick := time.NewTicker(5 * time.Millisecond)
	for !p.settled() && time.Now().Before(deadline) && ctx.Err() == nil {
		<-tick.C
	}
	tick.Stop()
	graceUsed := max(0, time.Since(windowEnd))
	close(stopProgress)
	<-progressDone

	counts := p.finish(dispatched)
	lat, fromSent, ack, timeline := p.histograms()
	lag := newHist()
	for _, h := range lags {
		lag.Merge(h)
	}
	res := workerResult{
		Phase:       cmd.Phase,
		Counts:      counts,
		Latency:     encodeHist(lat),
		FromSent:    encodeHist(fromSent),
		AckLatency:  encodeHist(ack),
		SendLag:     encodeHist(lag),
		Timeline:    timeline,
		Dispatched:  dispatched,
		Disconnects: w.disconnects.Load() - disc0,
		Reconnects:  w.reconnects.Load() - reco0,
		Stale:       w.stale.Load() - stale0,
		CPUSeconds:  cpu.Seconds(),
		Up:          w.up(),
		GraceUsed:   graceUsed,
	}
	w.codesMu.Lock()
	for k, v := range w.codes {
		if d := v - codes0[k]; d > 0 {
			if res.CloseCodes == nil {
				res.CloseCodes = map[string]int64{}
			}
			res.CloseCodes[k] = d
		}
	}
	w.codesMu.Unlock()
	return res
}

// sender writes the jobs of its queue: it records who should get each
// message, then sends it without waiting for the answer.
func (w *worker) sender(p *phase, sched schedule, jobs <-chan job, lag *hdrhistogram.Histogram) {
	var rcpts []int32
	var body []byte
	for j := range jobs {
		intended := sched.due(j.seq)
		if p.measured(intended) {
			record(lag, time.Since(p.base)-intended)
		}
		rcpts = rcpts[:0]
		if !w.cfg.Echo {
			rcpts = w.plan.recipients(j.pk, rcpts)
		}
		p.expect(j.seq, intended, rcpts)
		body = appendBody(body[:0], p.id, j.seq, int64(intended), w.cfg.Body)
		f := client.Frame{Type: protocol.TypeSend, Body: string(body)}
		switch {
		case j.pk.group:
			f.Group = w.plan.groups[j.pk.to]
		case j.pk.room:
			f.Room = w.plan.rooms[j.pk.to]
		default:
			f.To = w.plan.users[j.pk.to]
		}
		c := w.conns[j.pk.from]
		if c == nil {
			p.notSent(j.seq)
			continue
		}
		seq := j.seq
		if err := c.SendAsync(f, func(a client.Ack, err error) { p.answered(seq, a, err) }); err != nil {
			p.notSent(seq)
			continue
		}
		p.nSent.Add(1)
	}
}

// progress reports p about once a second until stop.
func (w *worker) progress(p *phase, stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		w.emit(event{Type: "progress", Progress: &progressReport{
			Stage:     "run",
			Phase:     p.id,
			Elapsed:   time.Since(p.base),
			Sent:      p.nSent.Load(),
			Answered:  p.nAnswered.Load(),
			Delivered: p.nDelivered.Load(),
			Refused:   p.nRefused.Load(),
			Up:        w.up(),
			RecentP99: p.recentP99(),
		}})
	}
}

// up counts the connections up now.
func (w *worker) up() int {
	n := 0
	for i := range w.conns {
		if _, up := w.table.state(int32(i)); up {
			n++
		}
	}
	return n
}

// close closes every client, a few hundred at a time, and waits for the
// receivers.
func (w *worker) close() {
	w.closing.Store(true)
	sem := make(chan struct{}, closeConcurrency)
	var wg sync.WaitGroup
	for _, c := range w.conns {
		if c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c.Close()
		}()
	}
	wg.Wait()
	w.recv.Wait()
}
