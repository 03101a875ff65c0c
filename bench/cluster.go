package main

import (
	"context"
	"errors"
	"time"

	"github.com/shardchat/shard/internal/shardproc"
)

const (
	// readyTimeout bounds a node's start: /readyz, and every node seeing a
	// ring of all of them.
	readyTimeout = 30 * time.Second
	// stopTimeout bounds a node's graceful drain (its default
	// --drain-timeout is 10 s) before it is killed.
	stopTimeout = 15 * time.Second
)

// buildShard builds cmd/shard into dir and returns the binary's path.
func buildShard(ctx context.Context, dir string) (string, error) {
	bin, err := shardproc.Build(ctx, dir)
	if errors.Is(err, shardproc.ErrNoModule) {
		return "", errors.New("not inside the shard module: run bench from the repository or give --shard-bin")
	}
	return bin, err
}

// startCluster starts the local cluster of a case: n nodes of bin on
// 127.0.0.2, .3, ..., their logs in dir, each with the case's routing and
// the user's --node-args and --node-env. They die with bench.
func startCluster(ctx context.Context, bin, dir string, n int, routing string, cfg *Config) ([]*shardproc.Process, error) {
	args := append([]string{"--routing", routing, "--log-level", "warn"}, cfg.NodeArgs...)
	procs, err := shardproc.StartCluster(ctx, shardproc.ClusterSpec{
		Nodes:   n,
		Node:    shardproc.Spec{Bin: bin, Args: args, Env: cfg.NodeEnv, SysProcAttr: childAttr()},
		LogDir:  dir,
		Timeout: readyTimeout,
	})
	if err != nil {
		stopCluster(procs)
		return nil, err
	}
	return procs, nil
}

// stopCluster drains the nodes (SIGTERM) and kills those still running
// after stopTimeout.
func stopCluster(procs []*shardproc.Process) { shardproc.Stop(stopTimeout, procs...) }

// targets are the WebSocket URLs and the counter sources of a local cluster.
func targets(procs []*shardproc.Process) (urls []string, nodes []node) {
	for _, p := range procs {
		urls = append(urls, "ws://"+p.HTTP+"/ws")
		nodes = append(nodes, node{Name: p.Name, HTTP: "http://" + p.HTTP, PID: p.PID()})
	}
	return urls, nodes
}
