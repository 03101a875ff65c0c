package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// The report of `bench view`: per case (N, routing) the capacity and what
// the node spent at it, the steps that found it, and owner against
// broadcast at each N.

// ViewReport is the whole run.
type ViewReport struct {
	Command      string      `json:"command"`
	Cores        int         `json:"cores"`
	Step         string      `json:"step"`
	UsersPerNode int         `json:"users_per_node"`
	Runs         int         `json:"runs"`
	LoadStart    float64     `json:"loadavg_start"`
	LoadEnd      float64     `json:"loadavg_end"`
	Cases        []ViewCase  `json:"cases"`
	Ratios       []ViewRatio `json:"ratios,omitempty"`
	Charts       []string    `json:"charts,omitempty"`
	Errors       []string    `json:"errors,omitempty"`
}

// ViewCase is one routing at one cluster size.
type ViewCase struct {
	Nodes   int    `json:"nodes"`
	Routing string `json:"routing"`
	// Capacity is the highest cluster-wide rate (messages per second) the
	// node carried without a loss, a p99 over MaxP99 or a full core; 0
	// when none did. Limit is what the first failed step above it hit
	// (ViewStep.Limit): when it is not "node", the box saturated first.
	Capacity float64 `json:"capacity"`
	Limit    string  `json:"limit,omitempty"`
	// CoreCapacity is the rate at which the node would use one full core,
	// projected from its CPU less its idle (gossip) CPU at CoreFrom, the
	// highest rate it carried without a loss: on the shared box the box
	// saturates before the node does.
	CoreCapacity float64 `json:"core_capacity"`
	CoreFrom     float64 `json:"core_capacity_from_rate"`
	// Rounds and CoreRounds: Capacity and CoreCapacity in every round
	// (--runs); the case reported is the round of median Capacity.
	Rounds     []float64 `json:"rounds,omitempty"`
	CoreRounds []float64 `json:"core_rounds,omitempty"`
	StoppedBy  string    `json:"stopped_by,omitempty"`
	AtCapacity *ViewStep `json:"at_capacity,omitempty"`
	// Setup: starting the peers, their gossip joins, the registrations and
	// the clients; the bench process's CPU for it.
	SetupSeconds float64 `json:"setup_seconds"`
	SetupGenCPU  float64 `json:"setup_bench_cpu_seconds"`
	// QuietSeconds: the wait, after the setup, for the peers' gossip of
	// their joins to die down.
	QuietSeconds float64 `json:"quiet_seconds"`
	// Idle: 3 s of gossip alone, in cores: the node among N-1 members, the
	// peers' N-1 memberlists (the bench process), the whole box.
	IdleNodeCores  float64    `json:"idle_node_cores"`
	IdlePeersCores float64    `json:"idle_peers_cores"`
	IdleBoxCores   float64    `json:"idle_box_cores"`
	Steps          []ViewStep `json:"steps"`
}

// ViewStep is one rate played for one step.
type ViewStep struct {
	Rate float64 `json:"rate"` // cluster-wide, messages per second
	// Played: how long the senders sent (s); Seconds: until the last
	// answer, over which the rates and cores are taken.
	Played     float64 `json:"played_s"`
	Seconds    float64 `json:"seconds"`
	ClientSent int64   `json:"client_sent"` // by the node's own clients
	PeerSent   int64   `json:"peer_sent"`   // messages of the peers that reached the node
	Lost       int64   `json:"lost"`
	AckP99     float64 `json:"ack_p99_ms"`  // the node's clients: due time to ack
	PeerP99    float64 `json:"peer_p99_ms"` // the peers' requests: due time to the last answer
	NodeCores  float64 `json:"node_cores"`
	// CPUPer1k is the node's CPU, in ms, per 1,000 messages of the cluster
	// (R); CPUPer1kOwn per 1,000 messages that reached it (its clients'
	// sends and the peers' messages).
	CPUPer1k    float64 `json:"node_cpu_ms_per_1k"`
	CPUPer1kOwn float64 `json:"node_cpu_ms_per_1k_own"`
	BytesIn     float64 `json:"bytes_in_per_s"`
	BytesOut    float64 `json:"bytes_out_per_s"`
	BenchCores  float64 `json:"bench_cores"` // clients and peers, this process
	BoxCores    float64 `json:"box_cores"`   // the whole machine, every helper included
	// LagP99 is how late the generator dispatched its messages (ms):
	// latency that is the bench's or the box's. NodeWait and BenchWait
	// are the time their threads waited for a CPU, per second of the step.
	LagP99    float64 `json:"generator_lag_p99_ms"`
	NodeWait  float64 `json:"node_wait"`
	BenchWait float64 `json:"bench_wait"`
	Pass      bool    `json:"pass"`
	Why       string  `json:"why,omitempty"`
	// Limit is what a failed step hit: "node" (it saturated), "box" (the
	// machine was busy and the p99 over: the node was not the limit), or
	// "generator" (the bench dispatched late, the box not full).
	Limit string `json:"limit,omitempty"`
}

// ViewRatio is owner's capacity over broadcast's at one size.
type ViewRatio struct {
	Nodes     int     `json:"nodes"`
	Capacity  float64 `json:"capacity_ratio"`
	CoreRatio float64 `json:"core_capacity_ratio"`
}

// viewStep judges one step: a loss, a p99 over MaxP99 or the node at
// MaxCores fails it. Limit says whose the failure was: the node's when it
// was at MaxCores, or lost messages the generator had sent on time, or was
// slow on a box with CPU to spare; the generator's when it dispatched late
// (by half of MaxP99) on such a box; the box's when it was full (90% of
// its cores busy, the node under MaxCores), or the node waited for a CPU
// longer than it ran, or the generator was late on it.
func viewStep(cfg *viewConfig, r loadResult, rate float64, cores int) ViewStep {
	w := r.window.Seconds()
	st := ViewStep{Rate: rate, Played: r.played.Seconds(), Seconds: w, ClientSent: r.clientSent, PeerSent: r.peerSent, Lost: r.lost,
		AckP99: r.ack.P99, PeerP99: r.peer.P99, NodeCores: r.nodeCPU.Seconds() / w,
		BytesIn: float64(r.read) / w, BytesOut: float64(r.written) / w,
		BenchCores: r.genCPU.Seconds() / w, BoxCores: r.box.Seconds() / w,
		LagP99: r.lag.P99, NodeWait: r.nodeWait.Seconds() / w, BenchWait: r.genWait.Seconds() / w}
	if msgs := rate * r.played.Seconds(); msgs > 0 {
		st.CPUPer1k = r.nodeCPU.Seconds() * 1000 / (msgs / 1000)
	}
	if own := r.clientSent + r.peerSent; own > 0 {
		st.CPUPer1kOwn = r.nodeCPU.Seconds() * 1000 / (float64(own) / 1000)
	}
	maxP99 := float64(cfg.MaxP99.Microseconds()) / 1000
	var why []string
	if r.lost > 0 {
		why = append(why, fmt.Sprintf("%d lost", r.lost))
	}
	slow := st.AckP99 > maxP99 || st.PeerP99 > maxP99
	if slow {
		why = append(why, fmt.Sprintf("p99 over %v", cfg.MaxP99))
	}
	full := st.NodeCores >= cfg.MaxCores
	if full {
		why = append(why, fmt.Sprintf("node at %.2f cores", st.NodeCores))
	}
	st.Pass, st.Why = len(why) == 0, strings.Join(why, ", ")
	switch {
	case st.Pass:
	case full || (r.lost > 0 && st.LagP99 <= maxP99/2):
		st.Limit = "node"
	case st.LagP99 > maxP99/2 && st.BoxCores < 0.9*float64(cores) && st.NodeWait <= st.NodeCores:
		st.Limit = "generator"
		st.Why += fmt.Sprintf(" (generator %.0f ms late)", st.LagP99)
	case st.LagP99 > maxP99/2 || st.BoxCores >= 0.9*float64(cores) || st.NodeWait > st.NodeCores:
		st.Limit = "box"
		st.Why += fmt.Sprintf(" (box at %.2f cores, node waited %.2f s/s for a CPU, generator %.0f ms late)", st.BoxCores, st.NodeWait, st.LagP99)
	default:
		st.Limit = "node"
	}
	return st
}

func (s ViewStep) verdict() string {
	if s.Pass {
		return "pass"
	}
	if s.Limit == "node" {
		return "node saturated: " + s.Why
	}
	return s.Limit + " limit: " + s.Why
}

func (r *ViewReport) ratios() {
	for _, o := range r.Cases {
		for _, b := range r.Cases {
			if o.Routing == "owner" && b.Routing == "broadcast" && o.Nodes == b.Nodes {
				r.Ratios = append(r.Ratios, ViewRatio{Nodes: o.Nodes, Capacity: ratio(o.Capacity, b.Capacity),
					CoreRatio: ratio(o.CoreCapacity, b.CoreCapacity)})
			}
		}
	}
}

func writeView(w io.Writer, r *ViewReport, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	fmt.Fprintf(w, "%s\n%d cores, %d users per node, steps of %s; load average %.2f at the start, %.2f at the end\n\n",
		r.Command, r.Cores, r.UsersPerNode, r.Step, r.LoadStart, r.LoadEnd)
	fmt.Fprintf(w, "%-5s %-9s %10s %10s %10s %6s %8s %8s %8s %7s %9s %9s %6s %6s %6s %6s %6s  %s\n", "nodes", "routing",
		"capacity", "limit", "core-cap", "cores", "ms/1k", "ack-p99", "peer-p99", "lag-p99", "in-KB/s", "out-KB/s",
		"n-wait", "bench", "b-wait", "box", "gossip", "stopped by")
	for _, c := range r.Cases {
		s := c.AtCapacity
		if s == nil {
			s = &ViewStep{}
		}
		fmt.Fprintf(w, "%-5d %-9s %10.0f %10s %10.0f %6.2f %8.3f %8.1f %8.1f %7.1f %9.0f %9.0f %6.2f %6.2f %6.2f %6.2f %6.2f  %s\n",
			c.Nodes, c.Routing, c.Capacity, c.Limit, c.CoreCapacity, s.NodeCores, s.CPUPer1k, s.AckP99, s.PeerP99,
			s.LagP99, s.BytesIn/1e3, s.BytesOut/1e3, s.NodeWait, s.BenchCores, s.BenchWait, s.BoxCores, c.IdlePeersCores,
			c.StoppedBy)
	}
	for _, c := range r.Cases {
		if len(c.Rounds) > 1 {
			fmt.Fprintf(w, "%s at %d nodes, every round: capacity %.0f, at one core %.0f\n", c.Routing, c.Nodes, c.Rounds, c.CoreRounds)
		}
	}
	if len(r.Ratios) > 0 {
		fmt.Fprintln(w)
		for _, q := range r.Ratios {
			fmt.Fprintf(w, "%d nodes: owner/broadcast capacity x%.1f, at one core x%.1f\n", q.Nodes, q.Capacity, q.CoreRatio)
		}
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
	return nil
}

// writeViewCharts draws capacity and CPU per 1,000 messages against N.
func writeViewCharts(dir string, r *ViewReport) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	capc := &lineChart{title: "one node's view: cluster capacity at N nodes", subtitle: "solid: measured on 2 shared cores; dashed: projected to one full core of the node",
		xLabel: "nodes (N)", yLabel: "messages per second, cluster-wide (log)", logY: true, intX: true}
	cpu := &lineChart{title: "one node's view: node CPU per 1,000 cluster messages", subtitle: "at the capacity step",
		xLabel: "nodes (N)", yLabel: "node CPU ms per 1,000 messages (log)", logY: true, intX: true}
	for i, routing := range []string{"owner", "broadcast"} {
		measured := series{name: routing, color: palette[i], dots: true}
		core := series{name: routing + " at one core", color: palette[i], dash: true}
		per := series{name: routing, color: palette[i], dots: true}
		for _, c := range r.Cases {
			if c.Routing != routing || c.AtCapacity == nil {
				continue
			}
			x := float64(c.Nodes)
			measured.pts = append(measured.pts, [2]float64{x, c.Capacity})
			core.pts = append(core.pts, [2]float64{x, c.CoreCapacity})
			per.pts = append(per.pts, [2]float64{x, c.AtCapacity.CPUPer1k})
		}
		capc.series = append(capc.series, measured, core)
		cpu.series = append(cpu.series, per)
	}
	var files []string
	for name, c := range map[string]*lineChart{"view-capacity.svg": capc, "view-cpu.svg": cpu} {
		p, err := writeSVG(dir, name, c)
		if err != nil {
			return files, err
		}
		files = append(files, p)
	}
	return files, nil
}
