package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/shardproc"
	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/store"
)

// clusterNode is one shard process of a membership test, restartable under
// the same name and addresses.
type clusterNode struct {
	shardproc.Spec
	proc *shardproc.Process
}

func (n *clusterNode) url() string { return "ws://" + n.HTTP + "/ws" }

// start starts the node, or starts it again, joining seed (none: alone),
// and waits until it is ready.
func (n *clusterNode) start(t *testing.T, seed string) {
	n.Join = seed
	n.proc = testcluster.StartProcess(t, n.Spec)
	testcluster.WaitReady(t, n.proc)
}

// newClusterNode is a node on host with free ports; more flags, such as
// --store, go to its Args before it starts.
func newClusterNode(t *testing.T, name, host string) *clusterNode {
	return &clusterNode{Spec: shardproc.Spec{Name: name, Addrs: testcluster.FreeAddrs(t, host),
		Args: []string{"--drain-timeout", "5s", "--join-timeout", "20s", "--log-level", "info"}}}
}

// ringSize is the number of ring members node n routes by.
func ringSize(n *clusterNode) int {
	v, err := n.proc.Cluster()
	if err != nil {
		return -1
	}
	return v.Ring.Members
}

// ledger records everything the test's users saw, for the checks at the end.
type ledger struct {
	mu       sync.Mutex
	sends    []*sendRecord
	received map[string]map[string]int // user -> message tag -> times received
	conns    map[string][]interval     // user -> connected intervals (rooms joined)
	open     map[string]time.Time      // user -> start of the current interval
	node     map[string]string         // user -> node of the current interval
	events   []interval                // membership changes, for "settled" windows
}

type interval struct {
	from, to time.Time
	what     string
}

type sendRecord struct {
	tag, from, to, room string
	sent, answered      time.Time
	status, code        string
	ownClosed           bool // the sender's connection closed before the answer
	done                bool
}

func newLedger() *ledger {
	return &ledger{received: map[string]map[string]int{}, conns: map[string][]interval{}, open: map[string]time.Time{}, node: map[string]string{}}
}

func (l *ledger) state(user string, s client.State) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch s := s.(type) {
	case client.Connected:
		l.open[user] = time.Now()
		if s.Welcome.Node != "" {
			l.node[user] = s.Welcome.Node
		}
	case client.Disconnected:
		// It ended when the server's close arrived, which may be a while
		// before this report; the server may forget it as soon as then.
		if from, ok := l.open[user]; ok {
			l.conns[user] = append(l.conns[user], interval{from: from, to: s.At, what: l.node[user]})
			delete(l.open, user)
		}
	}
}

// connectedThroughout reports whether user held one connection, with its
// rooms joined, over all of [from, to].
func (l *ledger) connectedThroughout(user string, from, to time.Time) bool {
	if start, ok := l.open[user]; ok && start.Before(from) {
		return true
	}
	for _, iv := range l.conns[user] {
		if iv.from.Before(from) && iv.to.After(to) {
			return true
		}
	}
	return false
}

// describeConns lists user's connection intervals, for a failure message.
func (l *ledger) describeConns(user string) string {
	var b strings.Builder
	for _, iv := range l.conns[user] {
		fmt.Fprintf(&b, "on %s %s..%s ", iv.what, iv.from.Format("15:04:05.000"), iv.to.Format("15:04:05.000"))
	}
	if start, ok := l.open[user]; ok {
		fmt.Fprintf(&b, "on %s since %s", l.node[user], start.Format("15:04:05.000"))
	}
	return b.String()
}

func (l *ledger) settledAt(t time.Time, grace time.Duration) bool {
	for _, ev := range l.events {
		if !t.Before(ev.from) && t.Before(ev.to.Add(grace)) {
			return false
		}
	}
	return true
}

func (l *ledger) event(what string, from time.Time) {
	l.mu.Lock()
	l.events = append(l.events, interval{from: from, to: time.Now(), what: what})
	l.mu.Unlock()
}

// TestRollingChangesLoseNothingSilently runs 3 nodes with 300 users and
// steady traffic while a 4th node joins, every node in turn is drained and
// restarted, and one is killed with SIGKILL and started again. It then
// checks the promises of docs/protocol.md §10.6 over every message of the run.
func TestRollingChangesLoseNothingSilently(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level membership test")
	}
	rollingChanges(t, "")
}

// rollingChanges runs the scenario; with storeURL every node uses that
// message store, and the end also checks that every message acked
// `delivered` or `stored` is in its recipient's inbox.
func rollingChanges(t *testing.T, storeURL string) {
	const (
		users       = 300
		rooms       = 10
		rate        = 250 // messages per second, all users together
		settleGrace = 4 * time.Second
		deliverBy   = 3 * time.Second // a message not received this long after its ack is lost
	)
	nodes := []*clusterNode{
		newClusterNode(t, "n1", "127.0.0.2"),
		newClusterNode(t, "n2", "127.0.0.3"),
		newClusterNode(t, "n3", "127.0.0.4"),
	}
	var extra []string
	if storeURL != "" {
		extra = []string{"--store", storeURL, "--api-key", "test-key"}
	}
	for _, n := range nodes {
		n.Args = append(n.Args, extra...)
	}
	nodes[0].start(t, "")
	nodes[1].start(t, nodes[0].Gossip)
	nodes[2].start(t, nodes[0].Gossip)
	waitRing := func(want int, who []*clusterNode) {
		wait.For(t, 20*time.Second, 50*time.Millisecond, func() error {
			for _, n := range who {
				if got := ringSize(n); got != want {
					return fmt.Errorf("%s routes by a ring of %d, want %d", n.Name, got, want)
				}
			}
			return nil
		})
	}
	waitRing(3, nodes)

	led := newLedger()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cls := make([]*client.Client, users)
	var recvWG sync.WaitGroup
	for i := range cls {
		user := fmt.Sprintf("u%03d", i)
		home := nodes[i%3]
		var fallbacks []string
		for _, n := range nodes {
			if n != home {
				fallbacks = append(fallbacks, n.url())
			}
		}
		cl, err := client.Dial(ctx, client.Options{
			URL: home.url(), Fallbacks: fallbacks, User: user, Reconnect: true,
			BackoffMin: 50 * time.Millisecond, BackoffMax: time.Second,
			OnState: func(s client.State) { led.state(user, s) },
		})
		if err != nil {
			t.Fatalf("dial %s: %v", user, err)
		}
		if err := cl.Join(ctx, fmt.Sprintf("room%d", i%rooms)); err != nil {
			t.Fatalf("%s join: %v", user, err)
		}
		cls[i] = cl
		led.state(user, client.Connected{}) // Connected fired before the join
		recvWG.Add(1)
		go func() {
			defer recvWG.Done()
			for m := range cl.Messages() {
				led.mu.Lock()
				if led.received[user] == nil {
					led.received[user] = map[string]int{}
				}
				led.received[user][m.Body]++
				led.mu.Unlock()
			}
		}()
	}
	defer func() {
		for _, cl := range cls {
			cl.Close()
		}
		recvWG.Wait()
	}()

	// Steady traffic, open loop, until stop closes.
	stop := make(chan struct{})
	trafficDone := make(chan struct{})
	var seq int
	go func() {
		defer close(trafficDone)
		tick := time.NewTicker(time.Second / rate)
		defer tick.Stop()
		rng := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			i := rng.IntN(users)
			seq++
			rec := &sendRecord{tag: fmt.Sprintf("m%d", seq), from: fmt.Sprintf("u%03d", i)}
			f := client.Frame{Type: "send", Body: rec.tag}
			if rng.IntN(10) < 7 {
				j := rng.IntN(users - 1)
				if j >= i {
					j++
				}
				rec.to = fmt.Sprintf("u%03d", j)
				f.To = rec.to
			} else {
				rec.room = fmt.Sprintf("room%d", i%rooms)
				f.Room = rec.room
			}
			led.mu.Lock()
			rec.sent = time.Now()
			led.sends = append(led.sends, rec)
			led.mu.Unlock()
			err := cls[i].SendAsync(f, func(a client.Ack, err error) {
				led.mu.Lock()
				defer led.mu.Unlock()
				if rec.done {
					t.Errorf("message %s answered twice", rec.tag)
				}
				rec.done, rec.answered, rec.status = true, time.Now(), a.Status
				var e *client.Error
				switch {
				case errors.As(err, &e):
					rec.code = e.Code
				case err != nil:
					rec.ownClosed = true
				}
			})
			if err != nil { // not connected right now: nothing was sent
				led.mu.Lock()
				rec.done, rec.ownClosed, rec.answered = true, true, time.Now()
				led.mu.Unlock()
			}
		}
	}()

	settle := func() {
		select {
		case <-time.After(settleGrace):
		case <-ctx.Done():
		}
	}
	settle()

	// A 4th node joins.
	n4 := newClusterNode(t, "n4", "127.0.0.5")
	n4.Args = append(n4.Args, extra...)
	start := time.Now()
	n4.start(t, nodes[0].Gossip)
	nodes = append(nodes, n4)
	waitRing(4, nodes)
	led.event("n4 joins", start)
	settle()

	// Rolling restart: drain each node with SIGTERM, start it again.
	var drainTimes []time.Duration
	for _, n := range nodes {
		start := time.Now()
		n.proc.Signal(syscall.SIGTERM)
		if code := n.proc.Wait(10 * time.Second); code != 0 {
			t.Fatalf("%s exited %d after SIGTERM, want 0\n%s", n.Name, code, tail(n.proc.Output()))
		}
		drainTimes = append(drainTimes, time.Since(start))
		seed := nodes[0].Gossip
		if n == nodes[0] {
			seed = nodes[1].Gossip
		}
		n.start(t, seed)
		waitRing(4, nodes)
		led.event("restart "+n.Name, start)
		settle()
	}

	// kill -9 one node, wait until the others route around it, start it again.
	victim := nodes[1]
	start = time.Now()
	victim.proc.Signal(syscall.SIGKILL)
	victim.proc.Wait(5 * time.Second)
	var others []*clusterNode
	for _, n := range nodes {
		if n != victim {
			others = append(others, n)
		}
	}
	waitRing(3, others)
	routedAround := time.Since(start)
	victim.start(t, nodes[0].Gossip)
	waitRing(4, nodes)
	led.event("kill -9 and restart "+victim.Name, start)
	settle()

	close(stop)
	<-trafficDone
	// Let the last answers and deliveries arrive.
	wait.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		led.mu.Lock()
		defer led.mu.Unlock()
		for _, s := range led.sends {
			if !s.done {
				return fmt.Errorf("message %s has no answer yet", s.tag)
			}
		}
		return nil
	})
	time.Sleep(deliverBy) // deliveries of the last acks: a bounded grace, then judge

	led.mu.Lock()
	defer led.mu.Unlock()
	var (
		stats              = map[string]int{}
		violations         []string
		unavailablePerSec  = map[int64]int{}
		settledDelivered   int
		settledConsidered  int
		inflightToDeadNode int
	)
	violate := func(format string, args ...any) {
		if len(violations) < 20 {
			violations = append(violations, fmt.Sprintf(format, args...))
		}
		stats["violations"]++
	}
	membersOf := func(room string) []string {
		var out []string
		for i := 0; i < users; i++ {
			if fmt.Sprintf("room%d", i%rooms) == room {
				out = append(out, fmt.Sprintf("u%03d", i))
			}
		}
		return out
	}
	for _, s := range led.sends {
		switch {
		case s.ownClosed:
			stats["sender's own connection closed first"]++
			continue
		case s.code != "":
			stats["error "+s.code]++
			if s.code == protocol.CodeUnavailable {
				unavailablePerSec[s.sent.Unix()]++
			}
		default:
			stats["ack "+s.status]++
		}
		settled := led.settledAt(s.sent, settleGrace)
		if s.to != "" {
			got := led.received[s.to][s.tag]
			if got > 1 {
				violate("%s reached %s %d times", s.tag, s.to, got)
			}
			throughout := led.connectedThroughout(s.to, s.sent, s.answered.Add(deliverBy))
			switch s.status {
			case protocol.StatusDelivered:
				if got == 0 {
					if throughout {
						violate("%s acked delivered, but %s (connected throughout) never got it (sent %s; %s)",
							s.tag, s.to, s.sent.Format("15:04:05.000"), led.describeConns(s.to))
					} else {
						inflightToDeadNode++
					}
				}
			case protocol.StatusOffline:
				if led.connectedThroughout(s.to, s.sent, s.answered) {
					violate("%s acked offline, but %s was connected throughout the send (sent %s, answered %s by %s's connection; %s)",
						s.tag, s.to, s.sent.Format("15:04:05.000"), s.answered.Format("15:04:05.000"), s.from, led.describeConns(s.to))
				}
			}
			if settled && throughout {
				settledConsidered++
				if got == 1 {
					settledDelivered++
				} else {
					violate("%s sent at a settled time (%s) to %s, connected throughout: %s/%s, received %d times",
						s.tag, s.sent.Format("15:04:05.000"), s.to, s.status, s.code, got)
				}
			}
			continue
		}
		for _, m := range membersOf(s.room) {
			if m == s.from {
				continue
			}
			got := led.received[m][s.tag]
			if got > 1 {
				violate("room message %s reached %s %d times", s.tag, m, got)
			}
			if settled && led.connectedThroughout(m, s.sent, s.answered.Add(deliverBy)) {
				settledConsidered++
				if got == 1 {
					settledDelivered++
				} else {
					violate("room message %s sent at a settled time (%s) to %s, joined throughout: %s/%s, received %d times",
						s.tag, s.sent.Format("15:04:05.000"), m, s.status, s.code, got)
				}
			}
		}
	}
	maxUnavailable := 0
	for _, n := range unavailablePerSec {
		maxUnavailable = max(maxUnavailable, n)
	}
	keys := make([]string, 0, len(stats))
	for k := range stats {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var report strings.Builder
	fmt.Fprintf(&report, "%d messages sent during the run\n", len(led.sends))
	for _, k := range keys {
		fmt.Fprintf(&report, "  %-40s %d\n", k, stats[k])
	}
	fmt.Fprintf(&report, "  settled deliveries to connected recipients: %d of %d\n", settledDelivered, settledConsidered)
	fmt.Fprintf(&report, "  delivered acks whose recipient's node went away before it read them: %d\n", inflightToDeadNode)
	fmt.Fprintf(&report, "  most unavailable answers in one second: %d\n", maxUnavailable)
	fmt.Fprintf(&report, "  SIGTERM to exit: %v\n", drainTimes)
	fmt.Fprintf(&report, "  kill -9 to the others routing around it: %v\n", routedAround.Round(time.Millisecond))
	for _, ev := range led.events {
		fmt.Fprintf(&report, "  event %-28s %s .. %s\n", ev.what, ev.from.Format("15:04:05.000"), ev.to.Format("15:04:05.000"))
	}
	if storeURL != "" {
		stored, missing := checkInboxes(t, "http://"+nodes[0].HTTP, led.sends)
		fmt.Fprintf(&report, "  acked delivered or stored, checked in the recipients' inboxes: %d, missing: %d\n", stored, len(missing))
		for _, m := range missing {
			violate("%s", m)
		}
	}
	t.Log("\n" + report.String())
	for _, v := range violations {
		t.Error(v)
	}
	if settledConsidered == 0 {
		t.Fatal("no message was sent at a settled time: the test measured nothing")
	}
}

func tail(s string) string {
	lines := strings.Split(s, "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

// checkInboxes reads every recipient's inbox through the history API and
// returns how many direct messages acked delivered or stored it checked,
// and those missing from their recipient's inbox.
func checkInboxes(t *testing.T, api string, sends []*sendRecord) (checked int, missing []string) {
	inboxes := map[string]map[string]bool{}
	read := func(user string) map[string]bool {
		if got, ok := inboxes[user]; ok {
			return got
		}
		got := map[string]bool{}
		for after, more := int64(0), true; more; {
			var page struct {
				Messages []struct {
					Seq  int64  `json:"seq"`
					Body string `json:"body"`
				} `json:"messages"`
				More bool `json:"more"`
			}
			req, _ := http.NewRequest("GET", fmt.Sprintf("%s/api/users/%s/messages?after=%d&limit=%d", api, user, after, store.MaxReadLimit), nil)
			req.Header.Set("Authorization", "Bearer test-key")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("read %s's inbox: %v", user, err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("read %s's inbox: %s", user, resp.Status)
			}
			err = json.NewDecoder(resp.Body).Decode(&page)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("read %s's inbox: %v", user, err)
			}
			for _, m := range page.Messages {
				got[m.Body] = true
				after = m.Seq
			}
			more = page.More && len(page.Messages) > 0
		}
		inboxes[user] = got
		return got
	}
	for _, s := range sends {
		if s.to == "" || (s.status != protocol.StatusDelivered && s.status != protocol.StatusStored) {
			continue
		}
		checked++
		if !read(s.to)[s.tag] {
			missing = append(missing, fmt.Sprintf("%s acked %s but missing from %s's inbox", s.tag, s.status, s.to))
		}
	}
	return checked, missing
}
