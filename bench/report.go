package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is everything one bench invocation measured; --json prints it.
type Report struct {
	Machine  Machine       `json:"machine"`
	Args     []string      `json:"args"`
	Workload Workload      `json:"workload"`
	Cases    []*CaseReport `json:"cases"`
	Compare  []*Comparison `json:"compare,omitempty"`
	Charts   []string      `json:"charts,omitempty"`
	Logs     string        `json:"logs,omitempty"` // where the local nodes' logs were kept
	Errors   []string      `json:"errors,omitempty"`
}

// Machine is where the figures were taken.
type Machine struct {
	CPUs      int    `json:"cpus"`
	OS        string `json:"os"`
	Go        string `json:"go"`
	NofileMax uint64 `json:"nofile_limit"`
}

// Workload is the shape of the traffic, the same for every case.
type Workload struct {
	Users        int     `json:"users"`
	ConnsPerUser int     `json:"conns_per_user"`
	Conns        int     `json:"conns"`
	Rooms        int     `json:"rooms"`
	RoomSize     int     `json:"room_size"`
	Groups       int     `json:"groups,omitempty"`
	GroupSize    int     `json:"group_size,omitempty"`
	Rate         float64 `json:"rate"`
	Mix          float64 `json:"mix_direct"`
	GroupMix     float64 `json:"mix_group,omitempty"`
	Body         int     `json:"body_bytes"`
	Duration     float64 `json:"duration_s"`
	Warmup       float64 `json:"warmup_s"`
	Grace        float64 `json:"grace_s"`
	Procs        int     `json:"client_procs"`
	Seed         uint64  `json:"seed"`
}

// CaseReport is one cluster (size and routing) under the workload.
type CaseReport struct {
	Label       string       `json:"label"`
	Nodes       int          `json:"nodes"`
	Routing     string       `json:"routing"`
	Targets     []string     `json:"targets"`
	Connections ConnReport   `json:"connections"`
	Memory      []NodeMemory `json:"memory"`
	Runs        []*RunReport `json:"runs"`
	Max         *MaxReport   `json:"max,omitempty"`
	// EchoRounds is the nodes' CPU per chat message over the echo
	// baseline's CPU per round (--baseline): what a message costs in
	// echo rounds.
	EchoRounds float64 `json:"echo_rounds_per_msg,omitempty"`
	// EchoCalls and EchoWakeups are the same in system calls (read and
	// write together) and in thread wake-ups: counts, so steadier.
	EchoCalls   float64 `json:"echo_syscall_rounds_per_msg,omitempty"`
	EchoWakeups float64 `json:"echo_wakeup_rounds_per_msg,omitempty"`
	Error       string  `json:"error,omitempty"`
}

// ConnReport is the setup of the client connections.
type ConnReport struct {
	Wanted       int            `json:"wanted"`
	Established  int            `json:"established"`
	Failed       int            `json:"failed"`
	FailReasons  map[string]int `json:"fail_reasons,omitempty"`
	SetupSeconds float64        `json:"setup_s"`
	SetupRate    float64        `json:"setup_per_s"`
	Joins        int            `json:"joins"`
	JoinsFailed  int            `json:"joins_failed"`
	JoinSeconds  float64        `json:"join_s"`
	Groups       int            `json:"groups,omitempty"`
	GroupsFailed int            `json:"groups_failed,omitempty"`
	GroupSeconds float64        `json:"group_s,omitempty"`
	PerNode      map[string]int `json:"per_node"`
}

// NodeMemory is a node's resident memory before and after the clients
// connected (before any message).
type NodeMemory struct {
	Name        string  `json:"name"`
	Connections float64 `json:"connections"`
	RSSEmpty    float64 `json:"rss_empty_bytes"`
	RSSIdle     float64 `json:"rss_idle_bytes"`
	// The anonymous part of each, when bench started the node; what a
	// connection costs is the growth of this one then, of the RSS else.
	AnonEmpty    float64 `json:"anon_empty_bytes,omitempty"`
	AnonIdle     float64 `json:"anon_idle_bytes,omitempty"`
	BytesPerConn float64 `json:"bytes_per_conn"`
	// What the growth is made of, per connection: Go heap in use, goroutine
	// stacks, goroutines.
	HeapPerConn       float64 `json:"heap_per_conn"`
	StackPerConn      float64 `json:"stack_per_conn"`
	GoroutinesPerConn float64 `json:"goroutines_per_conn"`
}

// RunReport is one run of the schedule at one offered rate.
type RunReport struct {
	Phase         uint32  `json:"phase"`
	OfferedRate   float64 `json:"offered_rate"`
	Counts        Counts  `json:"counts"`
	SentRate      float64 `json:"sent_per_s"`
	DeliveredRate float64 `json:"delivered_per_s"`
	Latency       Latency `json:"latency"`
	// FromSent is the latency from when the generator took each message
	// rather than from its due time: without the generator's send lag, what
	// the server and the sockets took.
	FromSent      Latency          `json:"latency_from_sent"`
	AckLatency    Latency          `json:"ack_latency"`
	SendLag       Latency          `json:"send_lag"`
	Timeline      []TimelinePoint  `json:"timeline"`
	Cluster       *ClusterStats    `json:"cluster,omitempty"`
	ClusterError  string           `json:"cluster_error,omitempty"`
	Disconnects   int64            `json:"disconnects"`
	Reconnects    int64            `json:"reconnects"`
	CloseCodes    map[string]int64 `json:"close_codes,omitempty"`
	Stale         int64            `json:"stale"`
	GeneratorCPU  float64          `json:"generator_cpu_s"`
	LoadAvg       float64          `json:"load_avg_1m"` // of the machine, at the window's end
	Pass          *bool            `json:"pass,omitempty"`
	Verdict       string           `json:"verdict,omitempty"`
	WindowSeconds float64          `json:"window_s"`
}

// ClusterStats are the nodes' counters over the measured window.
type ClusterStats struct {
	ChatMessages      float64            `json:"chat_messages"`
	PeerMessages      float64            `json:"peer_messages"`
	PeerPerChat       float64            `json:"peer_per_chat"`
	PeerPerChatByKind map[string]float64 `json:"peer_per_chat_by_kind"`
	// RequestsPerChatByKind counts node-to-node requests as their answers
	// (shard_peer_replies_sent_total), one per request: where
	// PeerPerChatByKind counts a batched lookup of k users as k, this
	// counts it once.
	RequestsPerChatByKind map[string]float64 `json:"requests_per_chat_by_kind,omitempty"`
	Deliveries            float64            `json:"deliveries"`
	CPUSeconds            float64            `json:"cpu_s"`
	CPUPer1k              float64            `json:"cpu_s_per_1k_msgs"`
	// Per chat message, all nodes, when bench started them: read- and
	// write-like system calls and thread wake-ups (see sample). Where CPU
	// time swings with the load of a shared box, these say what a change
	// saved; against the echo's per round they say how far the floor is.
	ReadCallsPerChat  float64   `json:"read_syscalls_per_msg,omitempty"`
	WriteCallsPerChat float64   `json:"write_syscalls_per_msg,omitempty"`
	WakeupsPerChat    float64   `json:"wakeups_per_msg,omitempty"`
	Nodes             []NodeRun `json:"nodes"`
}

// NodeRun is one node over the measured window.
type NodeRun struct {
	Name         string  `json:"name"`
	Connections  float64 `json:"connections"`
	ChatMessages float64 `json:"chat_messages"`
	PeerMessages float64 `json:"peer_messages"`
	Deliveries   float64 `json:"deliveries"`
	CPUSeconds   float64 `json:"cpu_s"`
	RSS          float64 `json:"rss_bytes"`
}

// MaxReport is the outcome of --max.
type MaxReport struct {
	P99Bound float64 `json:"p99_bound_ms"`
	Highest  float64 `json:"highest_sustained_rate"`
	Best     int     `json:"best_run"` // index into Runs; -1 when no rate passed
	// Open: no step failed, so the highest sustained rate is only a lower
	// bound (raise --max-steps or start higher with --rate).
	Open bool `json:"open"`
}

// Comparison sets owner against broadcast at one cluster size.
type Comparison struct {
	Nodes int             `json:"nodes"`
	Rows  []ComparisonRow `json:"rows"`
}

// ComparisonRow is one figure of both routings; Advantage is how many times
// better owner does (broadcast/owner for a cost, owner/broadcast for a rate).
type ComparisonRow struct {
	Name      string  `json:"name"`
	Owner     float64 `json:"owner"`
	Broadcast float64 `json:"broadcast"`
	Advantage float64 `json:"owner_advantage"`
}

// mainRun is the run that stands for the case: the single run, or with --max
// the highest sustained one (the last one when none passed).
func (c *CaseReport) mainRun() *RunReport {
	if len(c.Runs) == 0 {
		return nil
	}
	if c.Max != nil && c.Max.Best >= 0 {
		return c.Runs[c.Max.Best]
	}
	return c.Runs[len(c.Runs)-1]
}

// echoRounds sets each case's EchoRounds from the echo case among cases,
// if there is one.
func echoRounds(cases []*CaseReport) {
	var floor *ClusterStats
	for _, c := range cases {
		if r := c.mainRun(); c.Routing == echoRouting && r != nil && r.Cluster != nil {
			floor = r.Cluster
		}
	}
	if floor == nil {
		return
	}
	for _, c := range cases {
		if r := c.mainRun(); c.Routing != echoRouting && r != nil && r.Cluster != nil {
			cl := r.Cluster
			c.EchoRounds = ratio(cl.CPUPer1k, floor.CPUPer1k)
			c.EchoCalls = ratio(cl.ReadCallsPerChat+cl.WriteCallsPerChat, floor.ReadCallsPerChat+floor.WriteCallsPerChat)
			c.EchoWakeups = ratio(cl.WakeupsPerChat, floor.WakeupsPerChat)
		}
	}
}

// compare builds the owner-versus-broadcast rows of two cases.
func compare(owner, broadcast *CaseReport) *Comparison {
	o, b := owner.mainRun(), broadcast.mainRun()
	if o == nil || b == nil {
		return nil
	}
	cmp := &Comparison{Nodes: owner.Nodes}
	cost := func(name string, ov, bv float64) {
		cmp.Rows = append(cmp.Rows, ComparisonRow{name, ov, bv, ratio(bv, ov)})
	}
	gain := func(name string, ov, bv float64) {
		cmp.Rows = append(cmp.Rows, ComparisonRow{name, ov, bv, ratio(ov, bv)})
	}
	if owner.Max != nil && broadcast.Max != nil {
		gain("highest sustained msg/s", owner.Max.Highest, broadcast.Max.Highest)
	}
	if o.Cluster != nil && b.Cluster != nil {
		cost("node-to-node msgs per chat msg", o.Cluster.PeerPerChat, b.Cluster.PeerPerChat)
		cost("node CPU s per 1,000 msgs", o.Cluster.CPUPer1k, b.Cluster.CPUPer1k)
	}
	cost("p50 latency ms", o.Latency.P50, b.Latency.P50)
	cost("p99 latency ms", o.Latency.P99, b.Latency.P99)
	cost("p99.9 latency ms", o.Latency.P999, b.Latency.P999)
	gain("delivered per s", o.DeliveredRate, b.DeliveredRate)
	cost("lost deliveries", float64(o.Counts.Lost), float64(b.Counts.Lost))
	// Below about 1,000 connections a node, heap growth steps and runtime
	// noise swamp the connections' own memory.
	if owner.Connections.Established >= 1000*owner.Nodes {
		cost("idle bytes per conn", avgBytesPerConn(owner.Memory), avgBytesPerConn(broadcast.Memory))
	}
	return cmp
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func avgBytesPerConn(ms []NodeMemory) float64 {
	var grown, conns float64
	for _, m := range ms {
		grown += m.grown()
		conns += m.Connections
	}
	return ratio(grown, conns)
}

// grown is what the node's memory grew by as the clients connected: its
// anonymous RSS when known, else its whole RSS. A node with no connection
// of its own grows too (its share of the directory).
func (m NodeMemory) grown() float64 {
	if m.AnonEmpty > 0 && m.AnonIdle > 0 {
		return m.AnonIdle - m.AnonEmpty
	}
	return m.RSSIdle - m.RSSEmpty
}

// Text output.

func mb(b float64) string { return fmt.Sprintf("%.1f MB", b/1e6) }

func kib(b float64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f KiB", b/1024)
}

func ms(v float64) string { return fmt.Sprintf("%.2f", v) }

func sortedKV[V int | int64 | float64](m map[string]V, format func(V) string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+" "+format(m[k]))
	}
	return strings.Join(parts, ", ")
}

func itoa[V int | int64](v V) string { return fmt.Sprint(v) }

// writeText prints the report as tables.
func writeText(w io.Writer, r *Report) {
	wl := r.Workload
	rooms := "no rooms"
	if wl.Rooms > 0 {
		rooms = fmt.Sprintf("%d rooms × %d users", wl.Rooms, wl.RoomSize)
	}
	mix := fmt.Sprintf("%.0f%% direct", wl.Mix*100)
	if wl.Groups > 0 {
		rooms += fmt.Sprintf(" · %d groups × %d users", wl.Groups, wl.GroupSize)
		mix += fmt.Sprintf(", %.0f%% to groups", wl.GroupMix*100)
	}
	fmt.Fprintf(w, "shard bench · %d users × %d conn = %d conns · %s · %.0f msg/s offered, %s, %d B bodies · %s window after %s warm-up · %d client proc(s) · %d CPUs\n",
		wl.Users, wl.ConnsPerUser, wl.Conns, rooms, wl.Rate, mix, wl.Body,
		secs(wl.Duration), secs(wl.Warmup), wl.Procs, r.Machine.CPUs)
	for _, c := range r.Cases {
		fmt.Fprintln(w)
		writeCase(w, c)
	}
	for _, cmp := range r.Compare {
		fmt.Fprintln(w)
		fmt.Fprintf(w, "owner vs broadcast, %d nodes (advantage: how many times better owner does)\n", cmp.Nodes)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "\towner\tbroadcast\tadvantage\t")
		for _, row := range cmp.Rows {
			adv := "-" // 0 against 0, or against nothing
			if row.Advantage > 0 {
				adv = fmt.Sprintf("×%.2f", row.Advantage)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", row.Name, num(row.Owner), num(row.Broadcast), adv)
		}
		tw.Flush()
	}
	if sweep := sweepRows(r); len(sweep) > 0 {
		fmt.Fprintln(w)
		what := "delivered msg/s"
		if r.Cases[0].Max != nil {
			what = "highest sustained msg/s"
		}
		fmt.Fprintf(w, "cluster size sweep (%s, node-to-node msgs per chat msg)\n", what)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "nodes\trouting\tmsg/s\tpeer/msg\tp99 ms\t")
		for _, s := range sweep {
			atLeast := ""
			if s.open {
				atLeast = "≥ "
			}
			fmt.Fprintf(tw, "%d\t%s\t%s%.0f\t%.2f\t%s\t\n", s.nodes, s.routing, atLeast, s.rate, s.peer, ms(s.p99))
		}
		tw.Flush()
	}
	for _, ch := range r.Charts {
		fmt.Fprintf(w, "chart: %s\n", ch)
	}
	if r.Logs != "" {
		fmt.Fprintf(w, "node logs: %s\n", r.Logs)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
}

func secs(s float64) string { return (time.Duration(s * float64(time.Second))).String() }

func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func writeCase(w io.Writer, c *CaseReport) {
	fmt.Fprintf(w, "== %s: %d nodes, routing %s\n", c.Label, c.Nodes, c.Routing)
	if c.Error != "" {
		fmt.Fprintf(w, "   failed: %s\n", c.Error)
	}
	cn := c.Connections
	groups := ""
	if cn.Groups > 0 || cn.GroupsFailed > 0 {
		groups = fmt.Sprintf("; %d groups created in %.2f s, %d failed", cn.Groups, cn.GroupSeconds, cn.GroupsFailed)
	}
	fmt.Fprintf(w, "connections   %d/%d in %.2f s (%.0f/s), %d failed%s; %d room joins in %.2f s, %d failed%s; per node: %s\n",
		cn.Established, cn.Wanted, cn.SetupSeconds, cn.SetupRate, cn.Failed, reasons(cn.FailReasons),
		cn.Joins, cn.JoinSeconds, cn.JoinsFailed, groups, sortedKV(cn.PerNode, itoa[int]))
	if c.Max != nil {
		if c.Max.Best >= 0 {
			atLeast := ""
			if c.Max.Open {
				atLeast = "at least "
			}
			fmt.Fprintf(w, "highest sustained rate  %s%.0f msg/s (p99 ≤ %.0f ms, nothing lost)", atLeast, c.Max.Highest, c.Max.P99Bound)
			if c.Max.Open {
				fmt.Fprint(w, "; no step failed: raise --max-steps or --rate to find the limit")
			}
			fmt.Fprintln(w, "; steps:")
		} else {
			fmt.Fprintf(w, "highest sustained rate  none: even the lowest step failed; steps:\n")
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "offered/s\tdelivered/s\tp50 ms\tp99 ms\tmax ms\tlost\terrors\tverdict\t")
		for _, r := range c.Runs {
			fmt.Fprintf(tw, "%.0f\t%.0f\t%s\t%s\t%s\t%d\t%d\t%s\t\n", r.OfferedRate, r.DeliveredRate,
				ms(r.Latency.P50), ms(r.Latency.P99), ms(r.Latency.Max), r.Counts.Lost, sumMap(r.Counts.Errors), r.Verdict)
		}
		tw.Flush()
		if r := c.mainRun(); r != nil {
			fmt.Fprintf(w, "-- the run at %.0f msg/s:\n", r.OfferedRate)
			writeRun(w, r)
		}
	} else if r := c.mainRun(); r != nil {
		writeRun(w, r)
	}
	if c.EchoRounds > 0 {
		fmt.Fprintf(w, "echo rounds   %.2f per chat msg (node CPU per chat msg over the echo's CPU per round)", c.EchoRounds)
		if c.EchoWakeups > 0 {
			fmt.Fprintf(w, "; in system calls %.2f, in wake-ups %.2f", c.EchoCalls, c.EchoWakeups)
		}
		fmt.Fprintln(w)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "node\tconns\tRSS empty\tRSS idle\tper conn\t(heap\tstacks\tgoroutines)\tRSS end\tCPU s\tchat msgs\tpeer msgs\tdeliveries\t")
	run := c.mainRun()
	for i, m := range c.Memory {
		var nr NodeRun
		if run != nil && run.Cluster != nil && i < len(run.Cluster.Nodes) {
			nr = run.Cluster.Nodes[i]
		}
		runCols := "-\t-\t-\t-\t-"
		if nr.Name != "" {
			runCols = fmt.Sprintf("%s\t%.2f\t%.0f\t%.0f\t%.0f", mb(nr.RSS), nr.CPUSeconds, nr.ChatMessages, nr.PeerMessages, nr.Deliveries)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%.1f\t%s\t\n", m.Name, m.Connections, mb(m.RSSEmpty), mb(m.RSSIdle),
			kib(m.BytesPerConn), kib(m.HeapPerConn), kib(m.StackPerConn), m.GoroutinesPerConn, runCols)
	}
	tw.Flush()
	if len(c.Memory) > 0 {
		fmt.Fprintln(w, "  per conn: what the node's anonymous RSS grew by, without the binary's own pages, which two builds can map differently; the whole RSS's, from /metrics, for a node bench did not start")
	}
}

func reasons(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	return " (" + sortedKV(m, itoa[int]) + ")"
}

func sumMap(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func writeRun(w io.Writer, r *RunReport) {
	c := r.Counts
	fmt.Fprintf(w, "messages      offered %d, sent %d (%.0f/s), not sent %d; answered %d: %s; errors %d%s; closed %d, unanswered %d\n",
		c.Offered, c.Sent, r.SentRate, c.NotSent, c.Answered(), sortedKV(c.Acks, itoa[int64]),
		sumMap(c.Errors), errs(c.Errors), c.Closed, c.Unanswered)
	fmt.Fprintf(w, "deliveries    expected %d, delivered %d (%.0f/s), lost %d (in %d msgs; not received within the grace), excluded %d (recipient dropped %d, send not accepted %d), duplicates %d, unexpected %d, out of order %d\n",
		c.Expected, c.Delivered, r.DeliveredRate, c.Lost, c.LostMessages, c.Excluded, c.ExcludedDropped, c.ExcludedUnaccepted,
		c.Duplicates, c.Unexpected, c.Reordered)
	l := r.Latency
	fmt.Fprintf(w, "latency ms    p50 %s  p90 %s  p99 %s  p99.9 %s  max %s   (send to delivery, from the scheduled send time; %d samples)\n",
		ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max), l.Count)
	f := r.FromSent
	fmt.Fprintf(w, "  from sent   p50 %s  p90 %s  p99 %s  p99.9 %s  max %s   (from when the generator took it: without its send lag)\n",
		ms(f.P50), ms(f.P90), ms(f.P99), ms(f.P999), ms(f.Max))
	a := r.AckLatency
	fmt.Fprintf(w, "ack ms        p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n", ms(a.P50), ms(a.P90), ms(a.P99), ms(a.P999), ms(a.Max))
	if cl := r.Cluster; cl != nil {
		perMsg := func(v float64) string { return fmt.Sprintf("%.3f", v) }
		fmt.Fprintf(w, "node-to-node  %.3f msgs per chat msg (%s) over %.0f chat msgs; requests per chat msg, a batch once: %s\n", cl.PeerPerChat,
			sortedKV(cl.PeerPerChatByKind, perMsg), cl.ChatMessages, sortedKV(cl.RequestsPerChatByKind, perMsg))
		fmt.Fprintf(w, "node CPU      %.3f s per 1,000 chat msgs (%.2f s in %.0f s, all nodes)\n", cl.CPUPer1k, cl.CPUSeconds, r.WindowSeconds)
		if cl.WakeupsPerChat > 0 {
			fmt.Fprintf(w, "node work     per chat msg: %.2f read and %.2f write system calls, %.2f thread wake-ups (all nodes)\n",
				cl.ReadCallsPerChat, cl.WriteCallsPerChat, cl.WakeupsPerChat)
		}
	} else if r.ClusterError != "" {
		fmt.Fprintf(w, "node counters unavailable: %s\n", r.ClusterError)
	}
	fmt.Fprintf(w, "clients       %d disconnects%s, %d reconnects; generator CPU %.2f s, send lag p99 %s ms max %s ms; machine load %.2f\n",
		r.Disconnects, codes(r.CloseCodes), r.Reconnects, r.GeneratorCPU, ms(r.SendLag.P99), ms(r.SendLag.Max), r.LoadAvg)
}

func errs(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	return " (" + sortedKV(m, itoa[int64]) + ")"
}

func codes(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	return " (close codes " + sortedKV(m, itoa[int64]) + ")"
}

type sweepRow struct {
	nodes      int
	routing    string
	rate, peer float64
	p99        float64
	open       bool // a --max search that found no limit: rate is a lower bound
}

// sweepRows is the size sweep, when the cases cover more than one size.
func sweepRows(r *Report) []sweepRow {
	sizes := map[int]bool{}
	for _, c := range r.Cases {
		if c.Routing != echoRouting {
			sizes[c.Nodes] = true
		}
	}
	if len(sizes) < 2 {
		return nil
	}
	var rows []sweepRow
	for _, c := range r.Cases {
		run := c.mainRun()
		if run == nil || c.Routing == echoRouting {
			continue
		}
		s := sweepRow{nodes: c.Nodes, routing: c.Routing, rate: run.DeliveredRate, p99: run.Latency.P99}
		if c.Max != nil {
			s.rate, s.open = c.Max.Highest, c.Max.Open
		}
		if run.Cluster != nil {
			s.peer = run.Cluster.PeerPerChat
		}
		rows = append(rows, s)
	}
	return rows
}
