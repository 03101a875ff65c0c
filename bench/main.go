// Command bench is the load generator of shard: it starts a local cluster
// (or targets given URLs), connects many clients, sends chat messages on an
// open-loop schedule, and reports what arrived, how fast, and what it cost
// the nodes. It only measures: it never changes a node's state beyond
// connecting, joining its own rooms, creating its own groups and chatting
// as its own users.
//
//	go run ./bench --nodes 3 --users 300 --rate 2000 --duration 10s
//	go run ./bench --compare --nodes 5 --mix 1
//	go run ./bench --max --sizes 3,5,8 --compare --chart docs/
//	go run ./bench --url ws://127.0.0.1:8000/ws --users 1000
//	go run ./bench --nodes 5 --store postgres://... --mix 0:0:1 --groups 1 --group-size 100
//	go run ./bench --soak 30m
//	go run ./bench sim --churn 60 --churn-sizes 256 --chart docs/sim --json
//	go run ./bench view --sizes 8,64,256 --chart docs/
//	go run ./bench --nodes 1 --mix 1 --rate 5000 --baseline
//
// Traffic stays on the addresses it is given; the local cluster and the
// clients use 127.0.0.0/8 only.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == workerFlag {
		if _, err := raiseNofile(); err != nil {
			fmt.Fprintln(os.Stderr, "bench worker:", err)
		}
		if err := serveWorker(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench worker:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 2 && os.Args[1] == echoFlag {
		if _, err := raiseNofile(); err != nil {
			fmt.Fprintln(os.Stderr, "bench echo:", err)
		}
		if err := serveEcho(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "bench echo:", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is bench without the process around it: exit 0 when every case ran,
// 1 when one failed, 2 for bad flags.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "sim" {
		return runSim(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "view" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return runView(ctx, args[1:], stdout, stderr)
	}
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	if cfg.Replot != "" {
		return replot(cfg, stdout, stderr)
	}
	nofile, err := raiseNofile()
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.Soak > 0 {
		return runSoak(ctx, cfg, stdout, stderr)
	}

	b := &bench{cfg: cfg, prog: newProgress(stderr, cfg.Progress), runID: newRunID()}
	rep, err := b.execute(ctx, nofile)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	return output(cfg, rep, stdout, stderr)
}

// replot prints a saved report again and draws its charts.
func replot(cfg *Config, stdout, stderr io.Writer) int {
	b, err := os.ReadFile(cfg.Replot)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	rep := &Report{}
	if err := json.Unmarshal(b, rep); err != nil {
		fmt.Fprintf(stderr, "bench: %s: %v\n", cfg.Replot, err)
		return 1
	}
	if cfg.Chart != "" {
		files, err := writeCharts(cfg.Chart, rep)
		if err != nil {
			fmt.Fprintf(stderr, "bench: charts: %v\n", err)
			return 1
		}
		rep.Charts = files
	}
	return output(cfg, rep, stdout, stderr)
}

// output prints rep as tables or JSON; exit 1 when a case failed.
func output(cfg *Config, rep *Report, stdout, stderr io.Writer) int {
	if cfg.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
	} else {
		writeText(stdout, rep)
	}
	if len(rep.Errors) > 0 {
		return 1
	}
	return 0
}
