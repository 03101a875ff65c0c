package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
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
	Leave     sim.Change `json:"leave"`
	Churn     *sim.Churn `json:"churn,omitempty"`
}

// SimReport is the whole of `bench sim`.
type SimReport struct {
	Sizes  []SimSize  `json:"sizes"`
	Memory sim.Memory `json:"memory"`
}

type simConfig struct {
	sizes        []int
	roomNodes    int
	churnChanges int
	churnEvery   time.Duration
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
		if err == nil && cfg.churnChanges > 0 {
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
	fmt.Fprintln(tw, "nodes\towner direct warm\tcold\troom warm\tbroadcast direct\tjoin moved\t1/N\tregisters\tjoin right ms\tleave right ms\t")
	for _, s := range rep.Sizes {
		fmt.Fprintf(tw, "%d\t%.3f\t%.3f\t%.3f\t%.0f\t%.4f\t%.4f\t%d\t%.1f\t%.1f\t\n", s.Nodes,
			s.Owner.DirectWarm.Messages, s.Owner.DirectCold.Messages, s.Owner.RoomWarm.Messages,
			s.Broadcast.DirectWarm.Messages, s.Join.RingMoved, s.Join.Promise, s.Join.Registers, s.Join.RightMS, s.Leave.RightMS)
	}
	tw.Flush()
	fmt.Fprintln(w, "node-to-node messages per chat message; a room's members on up to --room-nodes nodes")
	for _, s := range rep.Sizes {
		if c := s.Churn; c != nil {
			fmt.Fprintf(w, "churn at %d nodes: %d changes, %d sends, %d unanswered, %d answered twice, %d offline while connected, directories right %.1f ms after the last change\n",
				c.Nodes, c.Changes, c.Sends, c.Unanswered, c.Twice, c.OfflineConnected, c.RightMS)
		}
	}
	fmt.Fprintf(w, "a directory key at its owner: %.0f B (%.0f B watched), over %d keys\n", rep.Memory.BytesPerKey, rep.Memory.WatchedBytes, rep.Memory.Keys)
}
