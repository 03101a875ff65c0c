package web_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/shardproc"
	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/protocol"
)

// TestBrowserChatThroughNginxSurvivesDrainAndCrash is what a person does with the
// page: two people in two browsers, served by two different nodes behind
// nginx, chat one-to-one and in a room; then the node serving one of them is
// drained, and that page reconnects by itself and still gets the next message.
// Then the node serving the other one is killed, and that page comes back too.
func TestBrowserChatThroughNginxSurvivesDrainAndCrash(t *testing.T) {
	chromium := lookTool(t, "chromium", "/usr/bin/chromium")
	nginx := lookTool(t, "nginx", "/usr/sbin/nginx")
	start := time.Now()
	phase := func(what string) { t.Logf("%6.2fs %s", time.Since(start).Seconds(), what) }

	procs := testcluster.StartProcesses(t, 3, "--drain-timeout", "5s") // n1..n3 on 127.0.0.2..4
	phase("3 nodes ready")
	base := startNginx(t, nginx, procs).base
	phase("nginx ready at " + base)

	browser := startBrowser(t, chromium)
	phase("chromium started")
	alice := openPage(t, browser, "alice", base+"/?user=alice")
	bob := openPage(t, browser, "bob", base+"/?user=bob")
	pages := []*page{alice, bob}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range pages {
				p.dump()
			}
		}
	})

	// Alice and Bob must sit on different nodes, as the pages say. nginx
	// picks round robin over every request, so a reload moves Bob along;
	// a few requests of our own first shift the phase, in case a page load
	// makes a multiple of 3 requests.
	aliceNode := alice.connectedNode(10 * time.Second)
	bobNode := bob.connectedNode(10 * time.Second)
	for tries := 0; bobNode == aliceNode; tries++ {
		if tries == 8 {
			t.Fatalf("after %d reloads bob's page still shows node %s, the same as alice's", tries, bobNode)
		}
		for range tries%3 + 1 {
			if resp, err := http.Get(base + "/healthz"); err == nil {
				resp.Body.Close()
			}
		}
		bob.do(chromedp.Reload())
		bobNode = bob.connectedNode(10 * time.Second)
	}
	// The page tells the truth: the owner's directory agrees.
	for user, node := range map[string]string{"alice": aliceNode, "bob": bobNode} {
		var v struct{ Nodes []string }
		getJSON(t, base+"/api/users/"+user, &v)
		if len(v.Nodes) != 1 || v.Nodes[0] != node {
			t.Fatalf("%s's page shows node %s, but GET /api/users/%s says %v", user, node, user, v.Nodes)
		}
	}
	phase(fmt.Sprintf("alice on %s, bob on %s", aliceNode, bobNode))

	// A direct message, alice -> bob. The markup in it must stay text.
	hello := "Hi bob, <b>this</b> stays plain text & safe"
	alice.enterText("new-chat", "bob")
	alice.waitFor("alice's page to open the conversation with bob, the cursor in the message box",
		`document.querySelector('#conv-title')?.textContent === 'bob' && document.activeElement?.id === 'composer'`)
	alice.sendMessage(hello)
	alice.waitStatus(hello, "delivered", "delivered")
	bob.waitFor("bob's page to count 1 unread message from alice",
		`document.querySelector('[data-conv="@alice"] [data-testid=unread]')?.textContent === '1'`)
	bob.do(chromedp.Click(chromedp.CSS(`[data-conv="@alice"]`)))
	bob.waitMessage(hello, "alice")
	bob.waitFor("bob's unread count to clear once the conversation is open",
		`document.querySelector('[data-conv="@alice"] [data-testid=unread]')?.textContent === ''`)
	if n := bob.eval(`document.querySelectorAll('#messages b').length`); n != "0" {
		t.Fatalf("bob's page turned alice's text into %s <b> element(s): user text reached the page as HTML", n)
	}
	phase("alice -> bob delivered")

	// And back, bob -> alice, in the conversation bob has open.
	reply := "Hey alice! Bob here, served by " + bobNode
	bob.sendMessage(reply)
	bob.waitStatus(reply, "delivered", "delivered")
	alice.waitMessage(reply, "bob")
	phase("bob -> alice delivered")

	// A room: both join, alice sees both connections, bob gets her message.
	alice.enterText("new-chat", "#lobby")
	bob.enterText("new-chat", "#lobby")
	for _, p := range pages {
		p.waitFor(p.name+"'s page to join #lobby", `document.querySelector('[data-conv="#lobby"]')?.dataset.joined === 'true'`)
	}
	alice.do(chromedp.Click(chromedp.ID("refresh")))
	alice.waitFor("alice's page to show 2 connections in #lobby",
		`document.querySelector('#conv-sub')?.dataset.connections === '2'`)
	roomMsg := "Morning, lobby. Who is around?"
	alice.sendMessage(roomMsg)
	alice.waitStatus(roomMsg, "sent", "sent to 1")
	bob.waitMessage(roomMsg, "alice")
	phase("room message sent to 1")

	// Drain bob's node. The page must see close 1012, reconnect through
	// nginx to another node, join #lobby again, and get what alice sends.
	connects := bob.eval(`document.querySelector('#conn').dataset.connects`)
	var bobProc *shardproc.Process
	for _, p := range procs {
		if p.Name == bobNode {
			bobProc = p
		}
	}
	bobProc.Signal(syscall.SIGTERM)
	newNode := bob.waitFor("bob's page to reconnect to another node after its node drained",
		fmt.Sprintf(`(() => {
			const c = document.querySelector('#conn');
			const node = document.querySelector('#node').textContent;
			return c.dataset.state === 'open' && c.dataset.connects !== %q && node !== %q && node;
		})()`, connects, bobNode))
	phase("bob reconnected to " + newNode)
	if code := bob.eval(`document.querySelector('#conn').dataset.lastClose`); code != "1012" {
		t.Fatalf("bob's page saw close code %s when its node drained, want 1012", code)
	}
	if code := bobProc.Wait(10 * time.Second); code != 0 {
		t.Fatalf("%s exited %d after SIGTERM, want 0", bobNode, code)
	}
	bob.waitFor("bob's page to join #lobby again after reconnecting",
		`document.querySelector('[data-conv="#lobby"]')?.dataset.joined === 'true'`)

	afterRoom := "Still here after the drain?"
	alice.sendMessage(afterRoom)
	alice.waitStatus(afterRoom, "sent", "sent to 1")
	bob.waitMessage(afterRoom, "alice")

	afterDirect := "Welcome back, bob. You moved to " + newNode
	alice.do(chromedp.Click(chromedp.CSS(`[data-conv="@bob"]`)))
	alice.sendMessage(afterDirect)
	alice.waitStatus(afterDirect, "delivered", "delivered")
	bob.waitFor("bob's page to count alice's new message as unread",
		`document.querySelector('[data-conv="@alice"] [data-testid=unread]')?.textContent === '1'`)
	bob.do(chromedp.Click(chromedp.CSS(`[data-conv="@alice"]`)))
	bob.waitMessage(afterDirect, "alice")
	phase("after the drain: room and direct messages reach bob")

	// Screenshots, to look at: both pages on a laptop, bob's room (with the
	// note of his move), bob on a phone.
	alice.screenshot("alice.png")
	bob.screenshot("bob.png")
	bob.do(chromedp.Click(chromedp.CSS(`[data-conv="#lobby"]`)))
	bob.waitMessage(afterRoom, "alice")
	bob.screenshot("bob-room.png")
	bob.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
	bob.do(chromedp.Click(chromedp.ID("back")))
	bob.waitFor("bob's phone view to show the conversation list",
		`document.querySelector('#app').dataset.view === 'list'`)
	bob.screenshot("bob-phone-list.png")
	bob.do(chromedp.Click(chromedp.CSS(`[data-conv="@alice"]`)))
	bob.waitMessage(afterDirect, "alice")
	bob.screenshot("bob-phone-chat.png")
	phase("screenshots saved in " + artifactsDir(t))

	// What went over the wire so far, bob's drained socket included: every
	// frame the pages sent carries an id, and each id got exactly one answer.
	// This cluster keeps no messages (GET /api/cluster says so), so the
	// pages must not ask for a sync, and their joins carry no since.
	var cluster protocol.ClusterInfo
	getJSON(t, base+"/api/cluster", &cluster)
	if cluster.Store != "none" {
		t.Fatalf("GET /api/cluster: store %q, want none", cluster.Store)
	}
	for _, p := range pages {
		wait.For(t, 3*time.Second, 50*time.Millisecond, p.checkFrames)
		p.checkNoExceptions()
		for _, f := range p.sentFrames() {
			if f.Type == "sync" || f.Since != nil {
				t.Fatalf("%s's page sent %s to a cluster without a store", p.name, f.text)
			}
		}
		t.Logf("%s's page: %s, each id answered once, every send keyed", p.name, p.frameSummary())
	}

	// A crash, not a drain: kill -9 the node serving alice. Her page sees
	// the socket die, says so, and comes back on the last node once the
	// cluster has noticed (docs/protocol.md §10.3: about 2.5 s on loopback).
	var aliceProc *shardproc.Process
	survivor := ""
	for _, p := range procs {
		switch p.Name {
		case aliceNode:
			aliceProc = p
		case bobNode:
		default:
			survivor = p.Name
		}
	}
	connects = alice.eval(`document.querySelector('#conn').dataset.connects`)
	aliceProc.Signal(syscall.SIGKILL)
	alice.waitFor("alice's page to show that it lost its node",
		`document.querySelector('#conn').dataset.state !== 'open' && !document.querySelector('#banner').hidden`)
	alice.screenshot("alice-reconnecting.png")
	// The bound: about 6 s until the cluster declares the node failed (its
	// users cannot register anywhere before that), plus one backoff of at
	// most 8 s, plus slack.
	lastNode := alice.waitForLong(25*time.Second, "alice's page to reconnect after her node was killed",
		fmt.Sprintf(`(() => {
			const c = document.querySelector('#conn');
			const node = document.querySelector('#node').textContent;
			return c.dataset.state === 'open' && c.dataset.connects !== %q && node !== %q && node;
		})()`, connects, aliceNode))
	if lastNode != survivor {
		t.Fatalf("alice's page reconnected to %s, but the only node left is %s", lastNode, survivor)
	}
	phase("alice reconnected to " + lastNode + " after her node was killed")
	alice.waitFor("alice's page to join #lobby again after reconnecting",
		`document.querySelector('[data-conv="#lobby"]')?.dataset.joined === 'true'`)
	// Bob may have moved to alice's node after the drain; then he has to
	// come back as well.
	bob.waitForLong(25*time.Second, "bob's page to be connected to "+survivor,
		fmt.Sprintf(`document.querySelector('#conn').dataset.state === 'open' && document.querySelector('#node').textContent === %q`, survivor))
	bob.do(chromedp.EmulateViewport(1280, 800))
	afterCrash := "Alice, are you back?"
	bob.sendMessage(afterCrash)
	bob.waitStatus(afterCrash, "delivered", "delivered")
	alice.waitMessage(afterCrash, "bob")
	phase("after the crash: bob -> alice delivered")

	alice.do(chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
		})
		return err
	}))
	alice.screenshot("alice-dark.png")
	for _, p := range pages {
		p.checkNoExceptions()
	}
}

// TestPageReconnectsAfterNginxRestarts: nginx, the only way in for the
// page, is killed (master and workers) and started again; the page shows
// that it lost its connection, reconnects by itself through the same
// address, and chats on.
func TestPageReconnectsAfterNginxRestarts(t *testing.T) {
	chromium := lookTool(t, "chromium", "/usr/bin/chromium")
	ng := startNginx(t, lookTool(t, "nginx", "/usr/sbin/nginx"), testcluster.StartProcesses(t, 1))
	browser := startBrowser(t, chromium)
	alice := openPage(t, browser, "alice", ng.base+"/?user=alice")
	t.Cleanup(func() {
		if t.Failed() {
			alice.dump()
		}
	})
	alice.connectedNode(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bob, err := client.Dial(ctx, client.Options{URL: "ws" + strings.TrimPrefix(ng.base, "http") + "/ws", User: "bob", Reconnect: true})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()

	connects := alice.eval(`document.querySelector('#conn').dataset.connects`)
	ng.kill()
	alice.waitFor("alice's page to show that it lost its connection",
		`document.querySelector('#conn').dataset.state !== 'open' && !document.querySelector('#banner').hidden`)
	restarted := time.Now()
	ng.start()
	alice.waitForLong(15*time.Second, "alice's page to reconnect through nginx once it is back",
		fmt.Sprintf(`document.querySelector('#conn').dataset.state === 'open' && document.querySelector('#conn').dataset.connects !== %q`, connects))
	t.Logf("the page reconnected %s after nginx was started again", time.Since(restarted).Round(time.Millisecond))
	wait.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		ack, err := bob.Send(ctx, "alice", "through the new nginx")
		if err != nil || ack.Status != protocol.StatusDelivered {
			return fmt.Errorf("bob -> alice after the restart: %+v %v", ack, err)
		}
		return nil
	})
	alice.enterText("new-chat", "bob")
	alice.waitMessage("through the new nginx", "bob")
	alice.sendMessage("got it")
	alice.waitStatus("got it", "delivered", "delivered")
	alice.checkNoExceptions()
}

// TestBrowserShowsPresenceAndTypingFromEvents: bob has a conversation with
// alice open; he sees her come online when her page connects, "alice is
// typing…" while she types (and not 5 s after she stopped), and her go
// offline, with when she was last seen, once her page is gone; all from
// the events the cluster sends, through nginx in front of 3 nodes: the page
// never asks GET /api/users.
func TestBrowserShowsPresenceAndTypingFromEvents(t *testing.T) {
	chromium := lookTool(t, "chromium", "/usr/bin/chromium")
	nginx := lookTool(t, "nginx", "/usr/sbin/nginx")
	procs := testcluster.StartProcesses(t, 3, "--drain-timeout", "5s")
	base := startNginx(t, nginx, procs).base
	browser := startBrowser(t, chromium)
	bob := openPage(t, browser, "bob", base+"/?user=bob")
	pages := []*page{bob}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range pages {
				p.dump()
			}
		}
	})
	bob.connectedNode(10 * time.Second)
	bob.enterText("new-chat", "alice")
	bob.waitFor("bob's page to say alice, who never connected, is offline",
		`document.querySelector('#conv-title')?.textContent === 'alice' &&
		 document.querySelector('#conv-sub').dataset.online === 'false' &&
		 document.querySelector('#conv-sub').textContent === 'offline'`)

	alice := openPage(t, browser, "alice", base+"/?user=alice")
	pages = append(pages, alice)
	alice.connectedNode(10 * time.Second)
	bob.waitFor("bob's page to show alice online, in the header and as a green dot",
		`document.querySelector('#conv-sub').dataset.online === 'true' &&
		 document.querySelector('#conv-sub').textContent === 'online' &&
		 document.querySelector('[data-conv="@alice"] .presence').dataset.online === 'true'`)

	// alice types to bob without sending.
	alice.enterText("new-chat", "bob")
	alice.waitFor("alice's page to open the conversation with bob",
		`document.querySelector('#conv-title')?.textContent === 'bob' && document.activeElement?.id === 'composer'`)
	alice.do(chromedp.SendKeys(chromedp.ID("composer"), "are you th"))
	bob.waitFor(`bob's page to say "alice is typing…"`,
		`document.querySelector('#typing').textContent === 'alice is typing…' &&
		 document.querySelector('[data-conv="@alice"] .conv-last').textContent === 'typing…'`)
	stopped := time.Now()
	bob.screenshot("bob-typing.png")
	bob.waitFor("bob's page to stop saying alice is typing once she stopped",
		`document.querySelector('#typing').textContent === ''`)
	if shown := time.Since(stopped); shown < 3*time.Second {
		t.Fatalf(`bob's page dropped "alice is typing…" %s after her last keystroke, want about 5 s`, shown)
	}

	// alice's page goes: 3 s later bob sees her offline, last seen then.
	left := time.Now().UnixMilli()
	alice.do(chromedp.Navigate("about:blank"))
	bob.waitFor("bob's page to show alice offline, last seen when she left",
		fmt.Sprintf(`document.querySelector('#conv-sub').dataset.online === 'false' &&
		 Number(document.querySelector('#conv-sub').dataset.lastSeen) >= %d &&
		 document.querySelector('#conv-sub').textContent.startsWith('last seen ') &&
		 document.querySelector('[data-conv="@alice"] .presence').dataset.online === 'false'`, left))
	bob.screenshot("bob-presence-last-seen.png")

	for _, p := range pages {
		wait.For(t, 3*time.Second, 50*time.Millisecond, p.checkFrames)
		p.checkNoExceptions()
		p.mu.Lock()
		for _, u := range p.requests {
			if strings.Contains(u, "/api/users/") {
				t.Errorf("%s's page asked %s: presence comes as events, it is not polled", p.name, u)
			}
		}
		p.mu.Unlock()
	}
	var typing int
	for _, f := range alice.sentFrames() {
		if f.Type == protocol.TypeTyping {
			typing++
		}
	}
	if typing != 1 {
		t.Errorf("alice's page sent %d typing frames for 10 keystrokes within 2 s, want 1", typing)
	}
}

// TestBrowserChatKeepsHistoryWithAStore is the page on a node that keeps
// messages (--data, the embedded store): a message to someone who has never
// connected is acked "stored" and reaches them when they do; a person who
// leaves the page and comes back gets what was sent meanwhile, in the room
// (join since) and directly (sync), and nothing twice; and after the node
// restarts, a page that syncs again does not show its own messages twice.
func TestBrowserChatKeepsHistoryWithAStore(t *testing.T) {
	chromium := lookTool(t, "chromium", "/usr/bin/chromium")
	start := time.Now()
	phase := func(what string) { t.Logf("%6.2fs %s", time.Since(start).Seconds(), what) }

	node := testcluster.StartProcess(t, shardproc.Spec{Name: "n1", Addrs: testcluster.FreeAddrs(t, "127.0.0.5"),
		Args: []string{"--data", t.TempDir(), "--drain-timeout", "5s", "--max-frame", "2048"}})
	testcluster.WaitReady(t, node)
	base := "http://" + node.HTTP
	var cluster protocol.ClusterInfo
	getJSON(t, base+"/api/cluster", &cluster)
	if cluster.Store != "embedded" {
		t.Fatalf("GET /api/cluster: store %q, want embedded", cluster.Store)
	}
	phase("1 node with the embedded store ready")

	browser := startBrowser(t, chromium)
	alice := openPage(t, browser, "alice", base+"/?user=alice")
	pages := []*page{alice}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range pages {
				p.dump()
			}
		}
	})
	alice.connectedNode(10 * time.Second)

	// Bob has never connected: the message waits in his inbox.
	d1 := "Bob, this waits for you"
	alice.enterText("new-chat", "bob")
	alice.waitFor("alice's page to open the conversation with bob",
		`document.querySelector('#conv-title')?.textContent === 'bob'`)
	alice.sendMessage(d1)
	alice.waitStatus(d1, "stored", "stored ✓")
	// A message longer than the node takes (its welcome says --max-frame
	// 2048) stays on the page, marked; the socket, which the node would
	// have closed for it (1009), stays open.
	connects := alice.eval(`document.querySelector('#conn').dataset.connects`)
	long := strings.Repeat("too long for this node, ", 100) + "the end"
	alice.eval(fmt.Sprintf(`document.querySelector('#composer').value = %q`, long))
	alice.sendMessage("")
	alice.waitStatus(long, "error", "error: too long")
	if now := alice.eval(`document.querySelector('#conn').dataset.connects`); now != connects {
		t.Fatalf("alice's page connected %s times after the long message, %s before: the socket was closed", now, connects)
	}
	alice.enterText("new-chat", "#lobby")
	alice.waitFor("alice's page to join #lobby", `document.querySelector('[data-conv="#lobby"]')?.dataset.joined === 'true'`)
	phase("alice -> bob (never connected) stored")

	bob := openPage(t, browser, "bob", base+"/?user=bob")
	pages = append(pages, bob)
	bob.connectedNode(10 * time.Second)
	bob.waitFor("bob's page to count alice's stored message as unread",
		`document.querySelector('[data-conv="@alice"] [data-testid=unread]')?.textContent === '1'`)
	bob.do(chromedp.Click(chromedp.CSS(`[data-conv="@alice"]`)))
	bob.waitMessage(d1, "alice")
	bob.enterText("new-chat", "#lobby")
	bob.waitFor("bob's page to join #lobby", `document.querySelector('[data-conv="#lobby"]')?.dataset.joined === 'true'`)
	r1 := "First in the lobby"
	alice.sendMessage(r1)
	alice.waitStatus(r1, "sent", "sent to 1")
	bob.waitMessage(r1, "alice")
	phase("bob synced his inbox and got the room live")

	// Bob leaves the page (this tab keeps its sessionStorage); what is sent
	// meanwhile comes back when he returns, and what he had seen does not.
	bob.do(chromedp.Navigate("about:blank"))
	wait.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		var v struct {
			Online      bool
			Connections int
		}
		getJSON(t, base+"/api/users/bob", &v)
		if v.Online {
			return fmt.Errorf("bob still online: %+v; bob's page: %s; %s", v, bob.frameSummary(), bob.eval("location.href"))
		}
		return nil
	})
	r2 := "While you were out, bob"
	alice.sendMessage(r2)
	alice.waitStatus(r2, "sent", "sent to 0")
	d2 := "Call me when you are back"
	alice.do(chromedp.Click(chromedp.CSS(`[data-conv="@bob"]`)))
	alice.sendMessage(d2)
	alice.waitStatus(d2, "stored", "stored ✓")
	bob.do(chromedp.Navigate(base + "/?user=bob"))
	bob.connectedNode(10 * time.Second)
	bob.waitFor("bob's page to count only the new direct message as unread",
		`document.querySelector('[data-conv="@alice"] [data-testid=unread]')?.textContent === '1'`)
	bob.do(chromedp.Click(chromedp.CSS(`[data-conv="#lobby"]`)))
	bob.waitMessage(r2, "alice")
	bob.do(chromedp.Click(chromedp.CSS(`[data-conv="@alice"]`)))
	bob.waitMessage(d2, "alice")
	for _, body := range []string{r1, d1} {
		if n := bob.countMessages(body); n != 0 {
			t.Fatalf("bob's page shows %q %d time(s) after coming back; it was seen before he left", body, n)
		}
	}
	var joinedSince, syncedAfter bool
	for _, f := range bob.sentFrames() {
		joinedSince = joinedSince || (f.Type == "join" && f.Since != nil && *f.Since > 0)
		syncedAfter = syncedAfter || (f.Type == "sync" && f.After != nil && *f.After > 0)
	}
	if !joinedSince || !syncedAfter {
		t.Fatalf("bob's page came back without join since (%v) or sync after (%v) past what it had seen", joinedSince, syncedAfter)
	}
	phase("bob came back: the room (join since) and his inbox (sync) caught up, nothing twice")

	// The node restarts. Both pages reconnect and sync: alice's inbox holds
	// the copies of what she sent, which she must not see twice.
	connects = alice.eval(`document.querySelector('#conn').dataset.connects`)
	node.Signal(syscall.SIGTERM)
	if code := node.Wait(10 * time.Second); code != 0 {
		t.Fatalf("n1 exited %d after SIGTERM, want 0", code)
	}
	node = testcluster.StartProcess(t, node.Spec) // the same name, addresses and data
	testcluster.WaitReady(t, node)
	alice.waitForLong(20*time.Second, "alice's page to reconnect after the restart",
		fmt.Sprintf(`document.querySelector('#conn').dataset.state === 'open' && document.querySelector('#conn').dataset.connects !== %q`, connects))
	bob.connectedNode(20 * time.Second)
	wait.For(t, 10*time.Second, 50*time.Millisecond, alice.synced)
	alice.waitFor("alice's page to join #lobby again", `document.querySelector('[data-conv="#lobby"]')?.dataset.joined === 'true'`)
	for _, body := range []string{d1, d2} {
		if n := alice.countMessages(body); n != 1 {
			t.Fatalf("alice's page shows her message %q %d times after syncing, want 1", body, n)
		}
	}
	reply := "Back, and after the restart too"
	bob.sendMessage(reply)
	bob.waitStatus(reply, "delivered", "delivered")
	alice.waitMessage(reply, "bob")
	alice.do(chromedp.Click(chromedp.CSS(`[data-conv="#lobby"]`)))
	for _, body := range []string{r1, r2} {
		if n := alice.countMessages(body); n != 1 {
			t.Fatalf("alice's page shows her room message %q %d times after joining again, want 1", body, n)
		}
	}
	phase("after the restart: no message twice, bob -> alice delivered")
	alice.screenshot("history-alice.png")

	for _, p := range pages {
		wait.For(t, 3*time.Second, 50*time.Millisecond, p.checkFrames)
		p.checkNoExceptions()
		t.Logf("%s's page: %s, each id answered once, every send keyed", p.name, p.frameSummary())
	}
}

// lookTool finds a program the test drives, or skips the test and says why.
func lookTool(t *testing.T, name, fallback string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if _, err := os.Stat(fallback); err == nil {
		return fallback
	}
	t.Skipf("%s is not installed (not in PATH, no %s): `make deps` installs it", name, fallback)
	return ""
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// startBrowser starts headless chromium with a fresh profile; the whole
// browser lives at most 90 s.
func startBrowser(t *testing.T, chromium string) context.Context {
	t.Helper()
	profile, err := os.MkdirTemp("", "shard-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1280, 800),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
		cancel()
		// Chromium's helpers can still write for a moment after it exits.
		for range 50 {
			if os.RemoveAll(profile) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	if err := chromedp.Do(browserCtx); err != nil {
		t.Fatalf("start %s: %v", chromium, err)
	}
	return browserCtx
}

// page is one person's tab, in a browser context of its own: no shared
// storage with the other person.
type page struct {
	t    *testing.T
	name string
	ctx  context.Context

	mu         sync.Mutex
	sockets    []*socketLog // every WebSocket the page opened, in order
	exceptions []string     // uncaught JavaScript exceptions
	requests   []string     // the URL of every HTTP request the page made
}

// socketLog is the text frames of one WebSocket, as DevTools saw them.
type socketLog struct {
	id       network.RequestID
	sent     []string
	received []string
}

// record runs in chromedp's event loop: it must be quick and never call
// back into the browser.
func (p *page) record(ev any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	socket := func(id network.RequestID) *socketLog {
		for _, s := range p.sockets {
			if s.id == id {
				return s
			}
		}
		s := &socketLog{id: id}
		p.sockets = append(p.sockets, s)
		return s
	}
	switch ev := ev.(type) {
	case *network.EventWebSocketFrameSent:
		if ev.Response != nil && ev.Response.Opcode == 1 {
			s := socket(ev.RequestID)
			s.sent = append(s.sent, string(ev.Response.PayloadData))
		}
	case *network.EventWebSocketFrameReceived:
		if ev.Response != nil && ev.Response.Opcode == 1 {
			s := socket(ev.RequestID)
			s.received = append(s.received, string(ev.Response.PayloadData))
		}
	case *network.EventRequestWillBeSent:
		if ev.Request != nil {
			p.requests = append(p.requests, ev.Request.URL)
		}
	case *runtime.EventExceptionThrown:
		p.exceptions = append(p.exceptions, (&chromedp.ExceptionError{ExceptionDetails: ev.ExceptionDetails}).Error())
	}
}

// frameID is the id syntax of docs/protocol.md §2.2.
var frameID = regexp.MustCompile(`^[A-Za-z0-9_.@-]{1,64}$`)

// checkFrames checks the page's side of the protocol on every socket so far:
// the first frame is a welcome, every client frame has a well-formed id of
// its own, and every id got exactly one ack, pong or error. Every send
// carries an idempotency key, and a key names one message: resends of a
// message (on any socket) reuse its key, and no two messages share one.
func (p *page) checkFrames() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.sockets) == 0 {
		return fmt.Errorf("%s's page opened no WebSocket that DevTools saw", p.name)
	}
	keyed := map[string]string{} // key -> to or room, and body
	for i, s := range p.sockets {
		type frame struct{ Type, ID, Key, To, Room, Body string }
		sentIDs := map[string]bool{}
		for _, text := range s.sent {
			var f frame
			if err := json.Unmarshal([]byte(text), &f); err != nil {
				return fmt.Errorf("%s's page sent a frame that is not JSON on socket %d: %q", p.name, i, text)
			}
			if !frameID.MatchString(f.ID) || sentIDs[f.ID] {
				return fmt.Errorf("%s's page sent a frame without an id of its own on socket %d: %s", p.name, i, text)
			}
			sentIDs[f.ID] = true
			if f.Type != "send" {
				continue
			}
			if !frameID.MatchString(f.Key) {
				return fmt.Errorf("%s's page sent a send without a well-formed key on socket %d: %s", p.name, i, text)
			}
			what := f.To + "#" + f.Room + "\x00" + f.Body
			if prev, ok := keyed[f.Key]; ok && prev != what {
				return fmt.Errorf("%s's page used key %s for two different messages: %s", p.name, f.Key, text)
			}
			keyed[f.Key] = what
		}
		answers := map[string]int{}
		for j, text := range s.received {
			var f frame
			if err := json.Unmarshal([]byte(text), &f); err != nil {
				return fmt.Errorf("%s's page got a frame that is not JSON on socket %d: %q", p.name, i, text)
			}
			if j == 0 && f.Type != "welcome" {
				return fmt.Errorf("%s's page got %s first on socket %d, want the welcome", p.name, text, i)
			}
			switch f.Type {
			case "ack", "pong", "error":
				answers[f.ID]++
			}
		}
		for id := range sentIDs {
			if answers[id] != 1 {
				return fmt.Errorf("%s's page sent frame %s on socket %d and got %d answers, want 1", p.name, id, i, answers[id])
			}
		}
		for id := range answers {
			if !sentIDs[id] {
				return fmt.Errorf("%s's page got an answer for %q on socket %d, which it never sent", p.name, id, i)
			}
		}
	}
	return nil
}

// sentFrame is a client frame as the page sent it.
type sentFrame struct {
	Type, ID, Key, To, Room, Body string
	Since, After                  *int64
	socket                        int
	text                          string
}

// sentFrames returns every frame the page sent so far, on every socket.
func (p *page) sentFrames() []sentFrame {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []sentFrame
	for i, s := range p.sockets {
		for _, text := range s.sent {
			var f sentFrame
			_ = json.Unmarshal([]byte(text), &f)
			f.socket, f.text = i, text
			out = append(out, f)
		}
	}
	return out
}

// synced reports whether the page's newest socket has finished an inbox
// sync: a sync frame answered by an ack with "more":false.
func (p *page) synced() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.sockets) == 0 {
		return errors.New("no socket yet")
	}
	s := p.sockets[len(p.sockets)-1]
	syncs := map[string]bool{}
	for _, text := range s.sent {
		var f struct{ Type, ID string }
		if json.Unmarshal([]byte(text), &f) == nil && f.Type == "sync" {
			syncs[f.ID] = true
		}
	}
	for _, text := range s.received {
		var f struct {
			Type, ID, Status string
			More             *bool
		}
		if json.Unmarshal([]byte(text), &f) == nil && f.Type == "ack" && syncs[f.ID] && f.More != nil && !*f.More {
			return nil
		}
	}
	return fmt.Errorf("%s's page has not finished a sync on its socket %d", p.name, len(p.sockets)-1)
}

func (p *page) frameSummary() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	sent, received := 0, 0
	for _, s := range p.sockets {
		sent += len(s.sent)
		received += len(s.received)
	}
	return fmt.Sprintf("%d sockets, %d frames sent, %d received", len(p.sockets), sent, received)
}

func (p *page) checkNoExceptions() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.exceptions) > 0 {
		p.t.Fatalf("%s's page threw: %s", p.name, strings.Join(p.exceptions, "\n"))
	}
}

func openPage(t *testing.T, browser context.Context, name, url string) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	// The first Do opens the tab and ties its life to the context it is
	// given: this one, not a step's, which ends when the step does.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("open a tab for %s: %v", name, err)
	}
	p := &page{t: t, name: name, ctx: ctx}
	if err := chromedp.Listen(ctx, p.record); err != nil {
		t.Fatalf("listen to %s's tab: %v", name, err)
	}
	p.do(chromedp.EmulateViewport(1280, 800), chromedp.Navigate(url))
	return p
}

// stepTimeout bounds every browser action and wait.
const stepTimeout = 10 * time.Second

func (p *page) do(steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.t.Fatalf("%s's page: %v", p.name, err)
	}
}

// eval returns a JavaScript expression's value as text.
func (p *page) eval(expr string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[any](expr))
	if err != nil {
		p.t.Fatalf("%s's page: %s: %v", p.name, expr, err)
	}
	return fmt.Sprint(v)
}

// waitFor polls a JavaScript expression until it is truthy, for at most
// stepTimeout, and returns its value as text.
func (p *page) waitFor(what, expr string) string {
	p.t.Helper()
	return p.waitForLong(stepTimeout, what, expr)
}

// waitForLong is waitFor with a bound of d.
func (p *page) waitForLong(d time.Duration, what, expr string) string {
	p.t.Helper()
	return p.pollFor(d, what, chromedp.Poll[any](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(d)))
}

func (p *page) poll(what string, action chromedp.Action[any]) string {
	p.t.Helper()
	return p.pollFor(stepTimeout, what, action)
}

func (p *page) pollFor(d time.Duration, what string, action chromedp.Action[any]) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, d+2*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, action)
	if err != nil {
		if errors.Is(err, chromedp.ErrPollingTimeout) || errors.Is(err, context.DeadlineExceeded) {
			p.t.Fatalf("waited %s for %s; it did not happen", d, what)
		}
		p.t.Fatalf("waiting for %s: %v", what, err)
	}
	return fmt.Sprint(v)
}

// connectedNode waits for the page to hold a welcome and returns the node
// it shows.
func (p *page) connectedNode(d time.Duration) string {
	p.t.Helper()
	return p.waitForLong(d, p.name+"'s page to connect",
		`document.querySelector('#conn')?.dataset.state === 'open' && document.querySelector('#node').textContent`)
}

// enterText types into an input and presses Enter, as a person would.
func (p *page) enterText(id, text string) {
	p.t.Helper()
	p.do(chromedp.SendKeys(chromedp.ID(id), text+"\n"))
}

// sendMessage types into the composer and presses Enter. The Enter key goes
// as keydown and keyup only: the page sends on keydown, and the separate
// char event that SendKeys adds would type a stray newline afterwards.
func (p *page) sendMessage(text string) {
	p.t.Helper()
	enter := chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		for _, typ := range []input.DispatchKeyEventType{input.DispatchKeyEventTypeRawKeyDown, input.DispatchKeyEventTypeKeyUp} {
			_, err := chromedp.Call(ctx, input.DispatchKeyEvent, input.DispatchKeyEventParams{
				Type: typ, Key: "Enter", Code: "Enter", WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13,
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	p.do(chromedp.SendKeys(chromedp.ID("composer"), text), enter)
	p.waitFor(p.name+"'s composer to empty after Enter", `document.querySelector('#composer').value === ''`)
}

// waitStatus waits until the page shows the sender's own message body with
// the given data-status and status text.
func (p *page) waitStatus(body, status, text string) {
	p.t.Helper()
	p.poll(fmt.Sprintf("%s's page to show %.60q as %q", p.name, body, text),
		chromedp.PollFunction[any](`(body, status, text) => {
			const m = [...document.querySelectorAll('#messages [data-testid=msg]')]
				.find((m) => m.querySelector('[data-testid=msg-body]').textContent === body);
			return !!m && m.classList.contains('own') && m.dataset.status === status &&
				m.querySelector('[data-testid=msg-status]').textContent.startsWith(text);
		}`, chromedp.WithPollingArgs(body, status, text), chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(stepTimeout)))
}

// waitMessage waits until the open conversation shows body from sender,
// exactly once.
func (p *page) waitMessage(body, from string) {
	p.t.Helper()
	p.poll(fmt.Sprintf("%s's page to show %q from %s", p.name, body, from),
		chromedp.PollFunction[any](`(body, from) => {
			const ms = [...document.querySelectorAll('#messages [data-testid=msg]')]
				.filter((m) => m.querySelector('[data-testid=msg-body]').textContent === body);
			return ms.length === 1 && ms[0].dataset.from === from && !ms[0].classList.contains('own');
		}`, chromedp.WithPollingArgs(body, from), chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(stepTimeout)))
}

// countMessages counts the messages with this body in the open conversation.
func (p *page) countMessages(body string) int {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(`[...document.querySelectorAll('#messages [data-testid=msg-body]')].filter((b) => b.textContent === %q).length`, body)))
	if err != nil {
		p.t.Fatalf("%s's page: count %q: %v", p.name, body, err)
	}
	return n
}

func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SHARD_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "artifacts")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// screenshot saves the visible page as a PNG in the artifacts directory.
func (p *page) screenshot(name string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatalf("screenshot of %s's page: %v", p.name, err)
	}
	if err := os.WriteFile(filepath.Join(artifactsDir(p.t), name), png, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// dump logs what the person would see, and saves a screenshot, after a
// failure.
func (p *page) dump() {
	ctx, cancel := context.WithTimeout(p.ctx, 3*time.Second)
	defer cancel()
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(() => {
		const c = document.querySelector('#conn');
		return 'connection: ' + JSON.stringify(c ? Object.assign({}, c.dataset) : null) + '\n' + document.body.innerText;
	})()`))
	if err != nil {
		p.t.Logf("%s's page: cannot read it: %v", p.name, err)
		return
	}
	p.t.Logf("%s's page shows:\n%s", p.name, text)
	if png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot()); err == nil {
		_ = os.WriteFile(filepath.Join(artifactsDir(p.t), p.name+"-failure.png"), png, 0o644)
	}
}
