package web_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/shardproc"
	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/ring"
)

// changeSeen bounds how long the cluster view may take to show a member
// that joined or left: the page asks every second, and the node serving it
// asks each member with a 1 s timeout, which leaves 3 s for gossip.
const changeSeen = 5 * time.Second

// TestClusterViewShowsANodeJoiningAndANodeDrained is what an operator does
// with /cluster: opens it on one node of a cluster with an API key, gives
// the key, and watches while a third node joins and another is drained.
// The ring, the node cards and the links follow within changeSeen.
func TestClusterViewShowsANodeJoiningAndANodeDrained(t *testing.T) {
	chromium := lookTool(t, "chromium", "/usr/bin/chromium")
	phase := phases(t)

	const key = "let-me-see"
	args := []string{"--drain-timeout", "5s", "--api-key", key}
	procs := testcluster.StartProcesses(t, 2, args...) // n1, n2 on 127.0.0.2, .3
	n1, n2 := procs[0], procs[1]
	phase("2 nodes ready")
	talk := startTalk(t)
	talk.user(t, n1, "ann", "ben", "cat")
	talk.user(t, n2, "ben", "ann")

	browser := startBrowser(t, chromium)
	phase("chromium started")
	ops := openPage(t, browser, "operator", "http://"+n1.HTTP+"/cluster")
	ops.do(chromedp.EmulateViewport(1440, 960))
	ops.waitFor("the cluster view to ask for the API key", `!document.querySelector('#key-form').hidden`)
	ops.screenshot("cluster-key.png")
	phase("the view asks for the key")
	ops.enterText("key", key)
	ops.waitFor("the cluster view to draw n1 and n2 on the ring once it has the key",
		`['n1', 'n2'].every((n) => document.querySelector('#ring path.arc[data-node="' + n + '"]')) &&
		 document.querySelector('#key-form').hidden`)
	ops.waitFor("the link between n1 and n2 to show up both ways",
		`document.querySelector('#links td[data-from="n1"][data-to="n2"]')?.dataset.state === 'up' &&
		 document.querySelector('#links td[data-from="n2"][data-to="n1"]')?.dataset.state === 'up'`)
	phase("the view shows n1 and n2")

	// A third node joins.
	spec := shardproc.Spec{Name: "n3", Addrs: testcluster.FreeAddrs(t, shardproc.Loopback(2)), Join: n1.Gossip, Args: args}
	n3 := testcluster.StartProcess(t, spec)
	testcluster.WaitReady(t, n3)
	joined := time.Now()
	ops.waitForLong(changeSeen, "the cluster view to show n3's arc on the ring and its card alive",
		`document.querySelector('#ring path.arc[data-node="n3"]')?.dataset.partitions > 0 &&
		 document.querySelector('#nodes [data-node="n3"]')?.dataset.state === 'alive' &&
		 !!document.querySelector('#links td[data-from="n1"][data-to="n3"]')`)
	phase(fmt.Sprintf("the view shows n3, %.1fs after it was ready", time.Since(joined).Seconds()))
	talk.user(t, n3, "cat", "ann")
	ops.waitFor("the three arcs to fill the ring, the nodes agreeing on it",
		`document.querySelectorAll('#ring path.arc[data-node]').length === 3 &&
		 [...document.querySelectorAll('#ring path.arc[data-node]')].reduce((n, a) => n + Number(a.dataset.partitions), 0) === `+strconv.Itoa(ring.Latest.Partitions())+` &&
		 document.querySelector('#ring-note').dataset.agree === 'true'`)
	ops.waitFor("every node's rates to move while its users chat",
		`['n1', 'n2', 'n3'].every((n) => ['messages', 'deliveries', 'peer'].every((m) =>
			Number(document.querySelector('#nodes [data-node="' + n + '"] [data-metric="' + m + '"]')?.dataset.value) > 0))`)
	// A few seconds of traffic draw the sparklines.
	ops.waitFor("the sparklines to hold a few seconds",
		`Number(document.querySelector('#live').dataset.updates) >= 8`)
	ops.screenshot("cluster-3-nodes.png")

	// n2 is drained.
	n2.Signal(syscall.SIGTERM)
	drained := time.Now()
	ops.waitForLong(changeSeen, "the cluster view to show n2 left, with no arc",
		`(() => {
			const card = document.querySelector('#nodes [data-node="n2"]');
			return (!card || card.dataset.state === 'left') && !document.querySelector('#ring path.arc[data-node="n2"]') &&
				!document.querySelector('#links td[data-to="n2"]');
		})()`)
	phase(fmt.Sprintf("the view shows n2 left, %.1fs after SIGTERM", time.Since(drained).Seconds()))
	if code := n2.Wait(10 * time.Second); code != 0 {
		t.Fatalf("n2 exited %d after SIGTERM, want 0", code)
	}
	ops.waitFor("n1 and n3 to share the whole ring",
		`[...document.querySelectorAll('#ring path.arc[data-node]')].map((a) => a.dataset.node).join() === 'n1,n3' &&
		 [...document.querySelectorAll('#ring path.arc[data-node]')].reduce((n, a) => n + Number(a.dataset.partitions), 0) === `+strconv.Itoa(ring.Latest.Partitions())+``)
	ops.screenshot("cluster-drained.png")
	ops.do(chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
		})
		return err
	}))
	ops.screenshot("cluster-dark.png")
	ops.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
	ops.screenshot("cluster-phone.png")
	phase("screenshots saved in " + artifactsDir(t))

	// A link with ?key= works too, and the key does not stay in the address.
	linked := openPage(t, browser, "linked", "http://"+n3.HTTP+"/cluster?key="+key)
	linked.waitFor("the cluster view opened with ?key= to show the ring",
		`document.querySelectorAll('#ring path.arc[data-node]').length === 2 && document.querySelector('#self').textContent === 'n3'`)
	if href := linked.eval(`location.href`); href != "http://"+n3.HTTP+"/cluster" {
		t.Fatalf("the cluster view opened with ?key= still shows %s in the address bar", href)
	}
	for _, p := range []*page{ops, linked} {
		p.checkNoExceptions()
	}
}

// talk keeps a few users sending to each other, one message every 20 ms
// each, so that the cluster view has rates to draw. It stops when the test
// ends; a user whose node goes away stops with it.
type talk struct {
	stop  chan struct{}
	loops sync.WaitGroup
}

func startTalk(t *testing.T) *talk {
	tk := &talk{stop: make(chan struct{})}
	t.Cleanup(func() {
		close(tk.stop)
		tk.loops.Wait()
	})
	return tk
}

// user connects name to p and has it send to each of peers in turn until
// the end.
func (tk *talk) user(t *testing.T, p *shardproc.Process, name string, peers ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, client.Options{URL: "ws://" + p.HTTP + "/ws", User: name})
	if err != nil {
		t.Fatalf("dial %s as %s: %v", p.Name, name, err)
	}
	tk.loops.Add(2)
	go func() {
		defer tk.loops.Done()
		for {
			select {
			case <-cl.Messages():
			case <-cl.Done():
				return
			case <-tk.stop:
				return
			}
		}
	}()
	go func() {
		defer tk.loops.Done()
		defer cl.Close()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-tk.stop:
				return
			case <-cl.Done():
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, _ = cl.Send(ctx, peers[i%len(peers)], "hello from "+name) // an answer is not the point here
			cancel()
		}
	}()
}
