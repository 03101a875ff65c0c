package shardproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// pollInterval is how often a wait asks the nodes again: a start or a ring
// change takes hundreds of milliseconds, and asking 20 times a second ends
// the wait soon after at no cost to the nodes.
const pollInterval = 50 * time.Millisecond

// firstNode is the address of node 1 of a cluster; node i listens on
// firstNode+i-1. 127.0.0.1 is left to everything else (nginx, PostgreSQL,
// the tests' own listeners).
var firstNode = net.IPv4(127, 0, 0, 2)

// MaxNodes bounds a cluster: its nodes take 127.0.0.2 to 127.0.0.251.
const MaxNodes = 250

// Loopback is the address of node i (from 0) of a cluster.
func Loopback(i int) string {
	ip := firstNode.To4()
	return net.IPv4(ip[0], ip[1], ip[2], ip[3]+byte(i)).String()
}

// ClusterSpec says how to start a cluster.
type ClusterSpec struct {
	Nodes int
	// Node is what every node shares: Bin, Args, Wrap, SysProcAttr. Name,
	// addresses, Join and Log are set for each.
	Node Spec
	// LogDir holds the nodes' logs: n1.log, n2.log, ...
	LogDir string
	// Timeout bounds each wait: for the first node, then for all of them
	// to be ready, then for the ring.
	Timeout time.Duration
}

// StartCluster starts cs.Nodes nodes named n1, n2, ... on free ports of
// Loopback(0), Loopback(1), ...: the first alone, the others joining it. It
// returns once every node is ready and routes by the same ring of all of
// them. On error it returns the nodes it started too, for the caller to stop.
func StartCluster(ctx context.Context, cs ClusterSpec) ([]*Process, error) {
	if cs.Nodes < 1 || cs.Nodes > MaxNodes {
		return nil, fmt.Errorf("a cluster of %d nodes: from 1 to %d on 127.0.0.x", cs.Nodes, MaxNodes)
	}
	var procs []*Process
	start := func(i int) error {
		s := cs.Node
		s.Name = "n" + strconv.Itoa(i+1)
		s.Log = filepath.Join(cs.LogDir, s.Name+".log")
		addrs, err := FreeAddrs(Loopback(i))
		if err != nil {
			return err
		}
		s.Addrs = addrs
		if i > 0 {
			s.Join = procs[0].Gossip
		}
		p, err := Start(s)
		if err != nil {
			return err
		}
		procs = append(procs, p)
		return nil
	}
	if err := start(0); err != nil {
		return procs, err
	}
	if err := WaitReady(ctx, cs.Timeout, procs...); err != nil {
		return procs, err
	}
	for i := 1; i < cs.Nodes; i++ {
		if err := start(i); err != nil {
			return procs, err
		}
	}
	if err := WaitReady(ctx, cs.Timeout, procs...); err != nil {
		return procs, err
	}
	return procs, WaitRing(ctx, cs.Timeout, cs.Nodes, procs...)
}

// WaitReady waits up to timeout until every process answers /readyz; it
// gives up at once if one exits.
func WaitReady(ctx context.Context, timeout time.Duration, procs ...*Process) error {
	return poll(ctx, timeout, func() error {
		for _, p := range procs {
			if err := p.ready(); err != nil {
				return err
			}
		}
		return nil
	})
}

// WaitRing waits up to timeout until every process routes by the same
// ring of want members, as /api/cluster says.
func WaitRing(ctx context.Context, timeout time.Duration, want int, procs ...*Process) error {
	return poll(ctx, timeout, func() error {
		version := ""
		for _, p := range procs {
			if err := p.exited(); err != nil {
				return err
			}
			v, err := p.Cluster()
			if err != nil {
				return err
			}
			if v.Ring.Members != want {
				return fmt.Errorf("%s routes by a ring of %d members, want %d", p.Name, v.Ring.Members, want)
			}
			if version != "" && v.Ring.Version != version {
				return errors.New("nodes disagree on the ring version")
			}
			version = v.Ring.Version
		}
		return nil
	})
}

// Stop drains every process (SIGTERM), and kills those still running after
// timeout (SIGKILL). It returns once all have exited.
func Stop(timeout time.Duration, procs ...*Process) {
	for _, p := range procs {
		p.Signal(syscall.SIGTERM)
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for _, p := range procs {
		select {
		case <-p.done:
		case <-deadline.C:
			for _, x := range procs {
				x.Signal(syscall.SIGKILL)
			}
			for _, x := range procs {
				<-x.done
			}
			return
		}
	}
}

// poll calls f every pollInterval until it returns nil, and returns f's
// last error once timeout has passed, at once when a process has exited.
func poll(ctx context.Context, timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errExited):
			return err
		case time.Now().After(deadline):
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		t := time.NewTimer(pollInterval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}
