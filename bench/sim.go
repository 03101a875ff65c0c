package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/shardchat/shard/internal/sim"
	"github.com/shardchat/shard/router"
)

// `bench sim` runs internal/sim: N real routers in one process over an
// in-memory network, for cluster sizes one machine cannot start as
// processes. It reports node-to-node traffic per message, what one join and
// one leave cost, churn, and what a directory key costs its owner.

// SimSize is what one cluster size measured.
type SimSize struct {
	Nodes     int        `json:"nodes"`
	Owner     sim.Costs  `json:"owner"`
	Broadcast sim.Costs  `json:"broadcast"`
	Join      sim.Change `json:"join"`
	// JoinSpread is the join's share of keys moved over joiners of other
	// names, as a multiple of 1/N: Join is one draw of it.
	JoinSpread sim.Spread `json:"join_spread"`
	Leave      sim.Change `json:"leave"`
	// Flap is a join half the nodes never saw, its node dying with another
	// one: what the holders that skipped a view cost.
	Flap  sim.Change `json:"flap"`
	Churn *sim.Churn `json:"churn,omitempty"`
}

// SimReport is the whole of `bench sim`.
type SimReport struct {
	Sizes  []SimSize  `json:"sizes"`
	Memory sim.Memory `json:"memory"`
	Charts []string   `json:"charts,omitempty"`
}

// spreadJoins is how many made-up joins JoinSpread measures per size.
const spreadJoins = 32

type simConfig struct {
	sizes        []int
	roomNodes    int
	churnChanges int
	churnEvery   time.Duration
	churnSizes   map[int]bool // nil: every size
	chart        string
	seed         uint64
	json         bool
}

func parseSimFlags(args []string, stderr io.Writer) (*simConfig, error) {
	fs := flag.NewFlagSet("bench sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &simConfig{}
	var sizes listFlag
	fs.Var(&sizes, "sizes", "cluster sizes, comma-separated (default 3,8,16,64,128,256)")
	fs.IntVar(&c.roomNodes, "room-nodes", 4, "the nodes a room's members are on")
	fs.IntVar(&c.churnChanges, "churn", 0, "joins and leaves, alternately, while sends flow (0: no churn)")
	fs.DurationVar(&c.churnEvery, "churn-every", time.Second, "time between two changes of --churn")
	fs.Uint64Var(&c.seed, "seed", 1, "seed of the draws")
	var churnSizes listFlag
	fs.Var(&churnSizes, "churn-sizes", "the cluster sizes of --sizes to churn, comma-separated (default every size)")
	fs.StringVar(&c.chart, "chart", "", "write SVG charts into this directory: messages per direct message, keys moved and time to right directories against N")
	fs.BoolVar(&c.json, "json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if len(sizes) == 0 {
		sizes = listFlag{"3", "8", "16", "64", "128", "256"}
	}
	for _, s := range sizes {
		n, err := strconv.Atoi(s)
		if err != nil || n < 2 {
			return nil, fmt.Errorf("--sizes: %q, want cluster sizes of at least 2", s)
		}
		c.sizes = append(c.sizes, n)
	}
	for _, s := range churnSizes {
		n, err := strconv.Atoi(s)
		if err != nil || !slices.Contains(c.sizes, n) {
			return nil, fmt.Errorf("--churn-sizes: %q, want sizes of --sizes", s)
		}
		if c.churnSizes == nil {
			c.churnSizes = make(map[int]bool)
		}
		c.churnSizes[n] = true
	}
	if c.roomNodes < 1 || c.churnChanges < 0 || c.churnEvery <= 0 {
		return nil, errors.New("--room-nodes and --churn-every must be positive, --churn at least 0")
	}
	return c, nil
}

// runSim is `bench sim`: exit 0 when every size ran.
func runSim(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseSimFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench sim: %v\n", err)
		return 2
	}
	rep := SimReport{Memory: sim.DirectoryMemory(100000)}
	for _, n := range cfg.sizes {
		s := SimSize{Nodes: n}
		if s.Owner, err = sim.MeasureCosts(n, router.Owner, cfg.roomNodes, cfg.seed); err == nil {
			s.Broadcast, err = sim.MeasureCosts(n, router.Broadcast, cfg.roomNodes, cfg.seed)
		}
		if err == nil {
			s.Join, s.Leave, err = sim.RingChanges(n, cfg.seed)
		}
		if err == nil {
			s.Flap, err = sim.Flap(n, cfg.seed)
		}
		if err == nil {
			s.JoinSpread, err = sim.JoinSpread(n, spreadJoins)
		}
		if err == nil && cfg.churnChanges > 0 && (cfg.churnSizes == nil || cfg.churnSizes[n]) {
			var ch sim.Churn
			ch, err = sim.RunChurn(sim.ChurnConfig{Nodes: n, Changes: cfg.churnChanges, Every: cfg.churnEvery, Senders: 4, Seed: cfg.seed})
			s.Churn = &ch
		}
		if err != nil {
			fmt.Fprintf(stderr, "bench sim: %d nodes: %v\n", n, err)
			return 1
		}
		rep.Sizes = append(rep.Sizes, s)
	}
	if cfg.chart != "" {
		if rep.Charts, err = writeSimCharts(cfg.chart, &rep); err != nil {
			fmt.Fprintf(stderr, "bench sim: charts: %v\n", err)
			return 1
		}
	}
	if cfg.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(stderr, "bench sim: %v\n", err)
			return 1
		}
		return 0
	}
	writeSimReport(stdout, &rep)
	return 0
}

func writeSimReport(w io.Writer, rep *SimReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "nodes\towner direct warm\tcold\troom warm\tbroadcast direct\tjoin moved\t1/N\tx 1/N\tjoins: mean\tmin\tmax\tregisters\tjoin right ms\tleave right ms\tflap right ms\t")
	for _, s := range rep.Sizes {
		sp := s.JoinSpread
		fmt.Fprintf(tw, "%d\t%.3f\t%.3f\t%.3f\t%.0f\t%.4f\t%.4f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t%.1f\t%.1f\t%.1f\t\n", s.Nodes,
			s.Owner.DirectWarm.Messages, s.Owner.DirectCold.Messages, s.Owner.RoomWarm.Messages,
			s.Broadcast.DirectWarm.Messages, s.Join.RingMoved, s.Join.Promise, s.Join.RingMoved/s.Join.Promise,
			sp.Mean, sp.Min, sp.Max, s.Join.Registers, s.Join.RightMS, s.Leave.RightMS, s.Flap.RightMS)
	}
	tw.Flush()
	fmt.Fprintf(w, "node-to-node messages per chat message; a room's members on up to --room-nodes nodes; joins: %d made-up joiners' keys moved x 1/N;\nflap: a join half the nodes never saw, its node dying with another one\n", spreadJoins)
	for _, s := range rep.Sizes {
		if c := s.Churn; c != nil {
			fmt.Fprintf(w, "churn at %d nodes: %d changes, %d sends, %d unanswered, %d answered twice, %d offline while connected; directories right at most %.1f ms after a change (%d changes took longer than --churn-every), %.1f ms after the last\n",
				c.Nodes, c.Changes, c.Sends, c.Unanswered, c.Twice, c.OfflineConnected, c.EachRightMS, c.Late, c.RightMS)
		}
	}
	fmt.Fprintf(w, "a directory key at its owner: %.0f B (%.0f B watched), over %d keys\n", rep.Memory.BytesPerKey, rep.Memory.WatchedBytes, rep.Memory.Keys)
	for _, ch := range rep.Charts {
		fmt.Fprintf(w, "chart: %s\n", ch)
	}
}

// writeSimCharts draws the sweep against N: node-to-node messages per
// direct message, keys moved by a join, and time to right directories.
func writeSimCharts(dir string, rep *SimReport) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	msgs := &lineChart{title: "node-to-node messages per direct message", subtitle: "internal/sim: N real routers in one process",
		xLabel: "nodes (N)", yLabel: "messages per direct message (log)", logY: true, intX: true}
	moved := &lineChart{title: "keys moved by one join", subtitle: fmt.Sprintf("against consistent hashing's 1/N; mean of %d joiners of other names", spreadJoins),
		xLabel: "nodes (N)", yLabel: "share of keys moved (log)", logY: true, intX: true}
	right := &lineChart{title: "time until every directory is exactly right", subtitle: "from the announcement of the change; goal at 256 nodes: 2 s",
		xLabel: "nodes (N)", yLabel: "ms (log)", logY: true, intX: true}
	warm := series{name: "owner, location cached", color: palette[0], dots: true}
	cold := series{name: "owner, cold cache", color: palette[0], dots: true, dash: true}
	bcast := series{name: "broadcast", color: palette[1], dots: true}
	join := series{name: "the join measured", color: palette[0], dots: true}
	mean := series{name: "joins, mean", color: palette[2], dots: true, dash: true}
	promise := series{name: "1/N", color: palette[1], dash: true}
	joinRight := series{name: "join", color: palette[0], dots: true}
	leaveRight := series{name: "leave", color: palette[2], dots: true}
	flapRight := series{name: "flap (a join half never saw)", color: palette[1], dots: true, dash: true}
	for _, s := range rep.Sizes {
		x := float64(s.Nodes)
		warm.pts = append(warm.pts, [2]float64{x, s.Owner.DirectWarm.Messages})
		cold.pts = append(cold.pts, [2]float64{x, s.Owner.DirectCold.Messages})
		bcast.pts = append(bcast.pts, [2]float64{x, s.Broadcast.DirectWarm.Messages})
		join.pts = append(join.pts, [2]float64{x, s.Join.RingMoved})
		mean.pts = append(mean.pts, [2]float64{x, s.JoinSpread.Mean * s.Join.Promise})
		promise.pts = append(promise.pts, [2]float64{x, s.Join.Promise})
		joinRight.pts = append(joinRight.pts, [2]float64{x, s.Join.RightMS})
		leaveRight.pts = append(leaveRight.pts, [2]float64{x, s.Leave.RightMS})
		flapRight.pts = append(flapRight.pts, [2]float64{x, s.Flap.RightMS})
	}
	msgs.series = []series{warm, cold, bcast}
	moved.series = []series{join, mean, promise}
	right.series = []series{joinRight, leaveRight, flapRight}
	var files []string
	for _, c := range []struct {
		name  string
		chart *lineChart
	}{{"sim-messages.svg", msgs}, {"sim-keys-moved.svg", moved}, {"sim-directories-right.svg", right}} {
		p, err := writeSVG(dir, c.name, c.chart)
		if err != nil {
			return files, err
		}
		files = append(files, p)
	}
	return files, nil
}
