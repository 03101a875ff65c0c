package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/shardproc"
	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/protocol"
)

// testNet is a network namespace joined to the host by a veth pair: a
// second host on this machine that the test can cut off and reconnect.
//
// The cut must be silent, as a real partition is, and must never send a
// packet anywhere else: routes to the other side are pointed at a "sink",
// a veth whose peer is down, which drops everything it is given. (This
// machine's kernel has neither netem nor dummy devices.) A blackhole route
// for the whole test range stays underneath, so that no packet for it can
// ever take the default route.
type testNet struct {
	ns, hostIf, nsIf string
	hostIP, nsIP     string
	hostSink, nsSink string
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// newTestNet creates the namespace, or skips the test when this machine
// cannot (not root, no iproute2).
func newTestNet(t *testing.T) *testNet {
	if os.Geteuid() != 0 {
		t.Skip("creating a network namespace needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("iproute2 (ip) is not installed")
	}
	if !rootIsMountPoint() {
		t.Skip("ip netns exec needs / to be a mount point (it makes / a slave mount), and here it is not: a chroot; the test needs a real root")
	}
	id := os.Getpid() % 100000
	n := &testNet{
		ns:       fmt.Sprintf("shardpart%d", id),
		hostIf:   fmt.Sprintf("shph%d", id),
		nsIf:     fmt.Sprintf("shpn%d", id),
		hostIP:   "10.77.0.1",
		nsIP:     "10.77.0.2",
		hostSink: fmt.Sprintf("shsh%d", id),
		nsSink:   fmt.Sprintf("shsn%d", id),
	}
	t.Cleanup(func() {
		ipCmd("link", "del", n.hostIf)
		ipCmd("link", "del", n.hostSink)
		ipCmd("route", "del", "blackhole", "10.77.0.0/16")
		ipCmd("netns", "del", n.ns)
	})
	for _, args := range [][]string{
		{"route", "add", "blackhole", "10.77.0.0/16"},
		{"netns", "add", n.ns},
		{"link", "add", n.hostSink, "type", "veth", "peer", "name", n.hostSink + "x"},
		{"link", "set", n.hostSink, "up"},
		{"netns", "exec", n.ns, "ip", "link", "add", n.nsSink, "type", "veth", "peer", "name", n.nsSink + "x"},
		{"netns", "exec", n.ns, "ip", "link", "set", n.nsSink, "up"},
		{"link", "add", n.hostIf, "type", "veth", "peer", "name", n.nsIf},
		{"link", "set", n.nsIf, "netns", n.ns},
		{"addr", "add", n.hostIP + "/24", "dev", n.hostIf},
		{"link", "set", n.hostIf, "up"},
		{"netns", "exec", n.ns, "ip", "addr", "add", n.nsIP + "/24", "dev", n.nsIf},
		{"netns", "exec", n.ns, "ip", "link", "set", n.nsIf, "up"},
		{"netns", "exec", n.ns, "ip", "link", "set", "lo", "up"},
	} {
		if err := ipCmd(args...); err != nil {
			t.Fatalf("set up the test network: %v", err)
		}
	}
	return n
}

// rootIsMountPoint says whether / is a mount point of this process's mount
// namespace. In a chroot it is a directory of the host's filesystem, and
// mountinfo lists no mount at /.
func rootIsMountPoint() bool {
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(info), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == "/" {
			return true
		}
	}
	return false
}

func (n *testNet) cut(t *testing.T) {
	for _, args := range [][]string{
		{"route", "add", n.nsIP + "/32", "dev", n.hostSink},
		{"netns", "exec", n.ns, "ip", "route", "add", n.hostIP + "/32", "dev", n.nsSink},
	} {
		if err := ipCmd(args...); err != nil {
			t.Fatal(err)
		}
	}
}

func (n *testNet) heal(t *testing.T) {
	for _, args := range [][]string{
		{"route", "del", n.nsIP + "/32", "dev", n.hostSink},
		{"netns", "exec", n.ns, "ip", "route", "del", n.hostIP + "/32", "dev", n.nsSink},
	} {
		if err := ipCmd(args...); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPartitionedNodeIsRoutedAroundAndHeals cuts one node off (its own
// network namespace), checks that the others declare it dead and route
// around it, then brings the link back and checks that the cluster heals
// into one ring whose directories are right again.
func TestPartitionedNodeIsRoutedAroundAndHeals(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level partition test")
	}
	tn := newTestNet(t)
	start := func(name, host, seed string, inNS bool) *clusterNode {
		// The nodes talk over 10.77.0.x, off loopback: a node without a
		// cluster key starts there only with --insecure.
		n := &clusterNode{Spec: shardproc.Spec{Name: name, Join: seed, Args: []string{"--drain-timeout", "5s", "--insecure"}}}
		if inNS { // a fresh namespace has every port free
			n.Addrs = shardproc.Addrs{HTTP: host + ":18080", Gossip: host + ":17946", Link: host + ":17947"}
			// Its client's connection crosses the cut: a short ping
			// interval makes n3 drop it during the cut, as a node drops
			// any client it cannot reach, so that dave reconnects after.
			n.Args = append(n.Args, "--ping-interval", "1s")
			n.Wrap = []string{"ip", "netns", "exec", tn.ns}
		} else {
			n.Addrs = testcluster.FreeAddrs(t, host)
		}
		n.proc = testcluster.StartProcess(t, n.Spec)
		testcluster.WaitReady(t, n.proc)
		return n
	}
	n1 := start("n1", tn.hostIP, "", false)
	n2 := start("n2", tn.hostIP, n1.Gossip, false)
	n3 := start("n3", tn.nsIP, n1.Gossip, true)
	all := []*clusterNode{n1, n2, n3}
	waitRing := func(want int, who []*clusterNode, within time.Duration) {
		t.Helper()
		procs := make([]*shardproc.Process, len(who))
		for i, n := range who {
			procs[i] = n.proc
		}
		testcluster.WaitRing(t, within, want, procs...)
	}
	waitRing(3, all, 15*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dial := func(n *clusterNode, user string) *client.Client {
		t.Helper()
		cl, err := client.Dial(ctx, client.Options{URL: n.url(), User: user, Reconnect: true,
			BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second})
		if err != nil {
			t.Fatalf("dial %s on %s: %v", user, n.Name, err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	alice, bob, dave := dial(n1, "alice"), dial(n2, "bob"), dial(n3, "dave")
	send := func(from *client.Client, to string) (string, error) {
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		defer scancel()
		ack, err := from.Send(sctx, to, "ping "+to)
		if d, ok := from.LastDisconnect(); errors.Is(err, client.ErrClosed) && ok {
			err = fmt.Errorf("%w (the connection to %s ended at %s: %d %v)", err, from.Welcome().Node, d.At.Format("15:04:05.000"), d.CloseCode, d.Err)
		}
		return ack.Status, err
	}
	if st, err := send(alice, "dave"); st != protocol.StatusDelivered {
		t.Fatalf("before the cut, alice to dave: %s %v", st, err)
	}

	cutAt := time.Now()
	tn.cut(t)
	waitRing(2, []*clusterNode{n1, n2}, 15*time.Second)
	t.Logf("cut off n3: the others route around it after %v", time.Since(cutAt).Round(time.Millisecond))
	v, err := n1.proc.Cluster()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range v.Members {
		if m.Name == "n3" && (m.State == "alive" || m.State == "suspect") {
			t.Fatalf("n1 still lists the cut-off n3 as %s", m.State)
		}
	}
	if st, err := send(alice, "bob"); st != protocol.StatusDelivered {
		t.Fatalf("during the cut, alice to bob (both on the connected side): %s %v", st, err)
	}
	// The cut-off side sees the others die too. Hold the cut past
	// memberlist's GossipToTheDeadTime (15 s), after which neither side
	// gossips to the other any more: only the reconnect loop can heal it.
	wait.For(t, 15*time.Second, 200*time.Millisecond, func() error {
		out, err := exec.Command("ip", "netns", "exec", tn.ns, "curl", "-s", "http://"+n3.HTTP+"/api/cluster").Output()
		if err != nil {
			return fmt.Errorf("ask n3 inside its namespace: %v", err)
		}
		var v protocol.ClusterInfo
		if err := json.Unmarshal(out, &v); err != nil {
			return err
		}
		if v.Ring.Members != 1 {
			return fmt.Errorf("cut-off n3 still routes by a ring of %d", v.Ring.Members)
		}
		return nil
	})
	time.Sleep(time.Until(cutAt.Add(17 * time.Second))) // the scenario: a partition of 17 s
	// dave is unreachable: his sender hears so, never silence.
	var cerr *client.Error
	if st, err := send(alice, "dave"); !(st == protocol.StatusOffline || errors.As(err, &cerr) && cerr.Code == protocol.CodeUnavailable) {
		t.Fatalf("during the cut, alice to dave: %q %v, want offline or unavailable", st, err)
	}

	healAt := time.Now()
	tn.heal(t)
	waitRing(3, all, 30*time.Second)
	t.Logf("link back: one ring of 3 again after %v", time.Since(healAt).Round(time.Millisecond))

	// Directories are right again: every node, asked about every user, names
	// the node that holds the user's connection now, and messages arrive.
	users := map[string]*client.Client{"alice": alice, "bob": bob, "dave": dave}
	wait.For(t, 30*time.Second, 100*time.Millisecond, func() error {
		for name, cl := range users {
			want := cl.Welcome().Node // of the current connection, or of the last one
			for _, n := range all {
				var u struct {
					Online bool     `json:"online"`
					Nodes  []string `json:"nodes"`
				}
				if err := getJSONFrom("http://"+n.HTTP+"/api/users/"+name, &u); err != nil {
					return err
				}
				if !u.Online || len(u.Nodes) != 1 || u.Nodes[0] != want {
					return fmt.Errorf("%s says %s is on %v (online %v), want %s", n.Name, name, u.Nodes, u.Online, want)
				}
			}
		}
		return nil
	})
	for from, cl := range users {
		for to := range users {
			if from == to {
				continue
			}
			if st, err := send(cl, to); st != protocol.StatusDelivered {
				t.Fatalf("after the heal, %s to %s: %s %v", from, to, st, err)
			}
		}
	}
}

func getJSONFrom(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
