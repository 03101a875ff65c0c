package main

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/fakepeers"
	"github.com/shardchat/shard/protocol"
)

// One step of `bench view`: for a while, the load one node of an N-node
// cluster carries at a cluster-wide rate R. Its own clients (real
// WebSocket connections) send R/N messages a second to users anywhere in
// the cluster; the synthetic peers send what the other N-1 nodes' senders
// would send it (fakepeers.Draws). Both follow an open-loop schedule, and
// latency runs from each message's due time.

// viewLoad is what a case keeps across its steps: the node, its peers,
// its clients and what they received.
type viewLoad struct {
	nodes   int
	pid     int
	peers   *fakepeers.Cluster
	draws   *fakepeers.Draws
	clients []*client.Client
	users   []int // the user of each client
	body    string
	seed    uint64

	received atomic.Int64 // messages the clients got
}

// loadResult is what one step measured.
type loadResult struct {
	clientSent, peerSent int64
	lost                 int64 // not answered, answered wrongly, or not delivered
	ack, peer            Latency
	// lag is how late the generator dispatched the messages: the part of
	// the latency that is the bench's (or the box's), not the node's.
	lag Latency
	// played is how long the senders sent; window runs from the start to
	// the last answer (at most grace after played).
	played, window       time.Duration
	nodeCPU, genCPU, box time.Duration
	// nodeWait, genWait: how long their threads waited, runnable, for a CPU.
	nodeWait, genWait time.Duration
	read, written     int64
}

// receive counts what each client gets, until it closes.
func (v *viewLoad) receive(wg *sync.WaitGroup) {
	for _, cl := range v.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range cl.Messages() {
				v.received.Add(1)
			}
		}()
	}
}

// lockedHist is a histogram the answers' goroutines record into.
type lockedHist struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

func (l *lockedHist) record(d time.Duration) {
	l.mu.Lock()
	record(l.h, d)
	l.mu.Unlock()
}

// run plays rate (cluster-wide, messages per second) for d, then waits up
// to grace for the answers and deliveries.
func (v *viewLoad) run(ctx context.Context, rate float64, d, grace time.Duration, step int) loadResult {
	var res loadResult
	ack, peer, lag := &lockedHist{h: newHist()}, &lockedHist{h: newHist()}, &lockedHist{h: newHist()}
	var answered, wrong, expect atomic.Int64
	clientRate := rate / float64(v.nodes)
	peerRate := rate * float64(v.nodes-1) / float64(v.nodes) * v.draws.Share()
	users := v.peers.Users()

	cpu0, _ := procCPU(v.pid)
	io0, _ := procIO(v.pid)
	gen0, box0, recv0 := cpuTime(), boxCPU(), v.received.Load()
	_, nw0, _ := procSched(v.pid)
	_, gw0, _ := procSched(0)
	start := time.Now().Add(50 * time.Millisecond)
	clk := realClock{start}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(v.seed, uint64(step)))
		total := int64(clientRate * d.Seconds())
		res.clientSent = schedule{clientRate}.run(ctx, clk, total, func(_ int64, due, now time.Duration) {
			lag.record(now - due)
			i := rng.IntN(len(v.clients))
			to := rng.IntN(users - 1)
			if to >= v.users[i] {
				to++
			}
			local := v.peers.Home(to) == 0
			if local {
				expect.Add(1)
			}
			err := v.clients[i].SendAsync(client.Frame{Type: protocol.TypeSend, To: fakepeers.User(to), Body: v.body}, func(a client.Ack, err error) {
				ack.record(time.Since(start.Add(due)))
				if err != nil || a.Status != protocol.StatusDelivered {
					wrong.Add(1)
				}
				answered.Add(1)
			})
			if err != nil {
				wrong.Add(1)
				answered.Add(1)
			}
		})
	}()
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(v.seed+1, uint64(step)))
		total := int64(peerRate * d.Seconds())
		schedule{peerRate}.run(ctx, clk, total, func(_ int64, due, now time.Duration) {
			lag.record(now - due)
			from, to := v.draws.Next(rng)
			if v.peers.Home(to) == 0 {
				expect.Add(1)
			}
			if v.peers.Send(from, to, v.body, func(ok bool) {
				peer.record(time.Since(start.Add(due)))
				if !ok {
					wrong.Add(1)
				}
				answered.Add(1)
			}) {
				atomic.AddInt64(&res.peerSent, 1)
			}
		})
	}()
	wg.Wait()

	// The node's CPU, I/O and waits count until the last answer: on a
	// busy box it is still working off the step when the senders stop.
	sent := res.clientSent + atomic.LoadInt64(&res.peerSent)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) && (answered.Load() < sent || v.received.Load()-recv0 < expect.Load()) {
		time.Sleep(10 * time.Millisecond)
	}
	res.played, res.window = d, time.Since(start)
	cpu1, _ := procCPU(v.pid)
	io1, _ := procIO(v.pid)
	res.nodeCPU, res.genCPU, res.box = cpu1-cpu0, cpuTime()-gen0, boxCPU()-box0
	res.read, res.written = io1.Read-io0.Read, io1.Written-io0.Written
	_, nw1, _ := procSched(v.pid)
	_, gw1, _ := procSched(0)
	res.nodeWait, res.genWait = nw1-nw0, gw1-gw0
	res.lost = wrong.Load() + (sent - answered.Load()) + max(0, expect.Load()-(v.received.Load()-recv0))
	res.ack, res.peer, res.lag = summarize(ack.h), summarize(peer.h), summarize(lag.h)
	return res
}

// bodyOf is a message body of n bytes.
func bodyOf(n int) string { return strings.Repeat("x", max(n, 1)) }
