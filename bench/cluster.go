package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shardchat/shard/internal/freeport"
)

const (
	// readyTimeout bounds a node's start: /readyz, and every node seeing a
	// ring of all of them.
	readyTimeout = 30 * time.Second
	// stopTimeout bounds a node's graceful drain (its default
	// --drain-timeout is 10 s) before it is killed.
	stopTimeout = 15 * time.Second
	// firstNodeIP is the address of node 1; node i listens on firstNodeIP+i-1.
	firstNodeIP = "127.0.0.2"
)

// buildShard builds cmd/shard into dir and returns the binary's path. It
// needs the module's source: run bench from the repository, or give
// --shard-bin.
func buildShard(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the shard module: run bench from the repository or give --shard-bin")
	}
	bin := filepath.Join(dir, "shard")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/shardchat/shard/cmd/shard")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build cmd/shard: %v\n%s", err, out)
	}
	return bin, nil
}

// localNode is one shard process that bench started.
type localNode struct {
	name, http, gossip string
	logPath            string
	cmd                *exec.Cmd
	done               chan struct{}
	err                error
}

// localCluster is the cluster bench started for a case.
type localCluster struct {
	nodes []*localNode
}

// nodeIP is the loopback address of node i (from 0).
func nodeIP(i int) string {
	ip := net.ParseIP(firstNodeIP).To4()
	return net.IPv4(ip[0], ip[1], ip[2], ip[3]+byte(i)).String()
}

// startCluster starts n nodes of bin on distinct loopback addresses, the
// first alone and the others joining it, and waits until each is ready and
// routes by a ring of all n.
func startCluster(ctx context.Context, bin, dir string, n int, routing string, extra []string) (*localCluster, error) {
	if n > 250 {
		return nil, fmt.Errorf("--nodes %d: at most 250 on 127.0.0.x", n)
	}
	c := &localCluster{}
	start := func(i int) error {
		host := nodeIP(i)
		hp, err := freeport.TCP(host)
		if err != nil {
			return err
		}
		gp, err := freeport.TCPAndUDP(host)
		if err != nil {
			return err
		}
		lp, err := freeport.TCP(host)
		if err != nil {
			return err
		}
		nd := &localNode{
			name:    "n" + strconv.Itoa(i+1),
			http:    net.JoinHostPort(host, strconv.Itoa(hp)),
			gossip:  net.JoinHostPort(host, strconv.Itoa(gp)),
			logPath: filepath.Join(dir, "n"+strconv.Itoa(i+1)+".log"),
			done:    make(chan struct{}),
		}
		args := []string{
			"--name", nd.name, "--http", nd.http, "--gossip", nd.gossip,
			"--link", net.JoinHostPort(host, strconv.Itoa(lp)),
			"--routing", routing, "--log-level", "warn",
		}
		if i > 0 {
			args = append(args, "--join", c.nodes[0].gossip)
		}
		args = append(args, extra...)
		logf, err := os.Create(nd.logPath)
		if err != nil {
			return err
		}
		nd.cmd = exec.Command(bin, args...)
		nd.cmd.Stdout, nd.cmd.Stderr = logf, logf
		nd.cmd.SysProcAttr = childAttr()
		if err := nd.cmd.Start(); err != nil {
			logf.Close()
			return fmt.Errorf("start %s: %w", nd.name, err)
		}
		go func() {
			nd.err = nd.cmd.Wait()
			logf.Close()
			close(nd.done)
		}()
		c.nodes = append(c.nodes, nd)
		return nil
	}
	fail := func(err error) (*localCluster, error) {
		c.stop()
		return nil, err
	}
	if err := start(0); err != nil {
		return fail(err)
	}
	if err := c.waitReady(ctx, c.nodes[:1]); err != nil {
		return fail(err)
	}
	for i := 1; i < n; i++ {
		if err := start(i); err != nil {
			return fail(err)
		}
	}
	if err := c.waitReady(ctx, c.nodes); err != nil {
		return fail(err)
	}
	if err := c.waitRing(ctx, n); err != nil {
		return fail(err)
	}
	return c, nil
}

// poll calls f every interval until it returns nil, and returns f's last
// error once timeout has passed.
func poll(ctx context.Context, timeout, interval time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		t := time.NewTimer(interval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

func (c *localCluster) waitReady(ctx context.Context, nodes []*localNode) error {
	return poll(ctx, readyTimeout, 50*time.Millisecond, func() error {
		for _, nd := range nodes {
			select {
			case <-nd.done:
				return fmt.Errorf("%s exited: %v\n%s", nd.name, nd.err, nd.logTail())
			default:
			}
			resp, err := httpClient.Get("http://" + nd.http + "/readyz")
			if err != nil {
				return fmt.Errorf("%s /readyz: %w", nd.name, err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("%s /readyz: %s", nd.name, resp.Status)
			}
		}
		return nil
	})
}

// waitRing waits until every node routes by the same ring of n members.
func (c *localCluster) waitRing(ctx context.Context, n int) error {
	return poll(ctx, readyTimeout, 50*time.Millisecond, func() error {
		version := ""
		for _, nd := range c.nodes {
			v, err := fetchCluster(ctx, "http://"+nd.http)
			if err != nil {
				return err
			}
			if v.Ring.Members != n {
				return fmt.Errorf("%s routes by a ring of %d members, want %d", nd.name, v.Ring.Members, n)
			}
			if version != "" && v.Ring.Version != version {
				return fmt.Errorf("nodes disagree on the ring version")
			}
			version = v.Ring.Version
		}
		return nil
	})
}

// logTail is the end of the node's log, for an error message.
func (nd *localNode) logTail() string {
	b, _ := os.ReadFile(nd.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(bytes.TrimSpace(b))
}

// targets are the WebSocket URLs and the counter sources of the cluster.
func (c *localCluster) targets() (urls []string, nodes []node) {
	for _, nd := range c.nodes {
		urls = append(urls, "ws://"+nd.http+"/ws")
		nodes = append(nodes, node{Name: nd.name, HTTP: "http://" + nd.http, PID: nd.cmd.Process.Pid})
	}
	return urls, nodes
}

// stop drains every node (SIGTERM), and kills those still running after
// stopTimeout.
func (c *localCluster) stop() {
	for _, nd := range c.nodes {
		_ = nd.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.NewTimer(stopTimeout)
	defer deadline.Stop()
	for _, nd := range c.nodes {
		select {
		case <-nd.done:
		case <-deadline.C:
			for _, x := range c.nodes {
				_ = x.cmd.Process.Kill()
			}
			for _, x := range c.nodes {
				<-x.done
			}
			return
		}
	}
}
