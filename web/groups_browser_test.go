package web_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/store/pgtest"
)

// TestBrowserGroupsReadTicksAndUnreadOnEveryDevice is a group and read state
// as people see them in the page, through nginx in front of 3 nodes that
// share PostgreSQL: alice creates a group with bob and carol, who has never
// connected; bob's page lists it with its unread count as the messages come,
// and reading it turns alice's tick into "read by bob"; carol signs in and
// her page shows the unread count the server keeps. alice manages the
// members, and bob sees each change in the timeline. Then bob has two
// devices: a group message and a direct one are unread on both, and reading
// each on one device clears it on the other, while alice's direct message
// turns to read. Last, alice removes carol, whose page turns read-only, and
// bob leaves, which takes the group from both his devices.
func TestBrowserGroupsReadTicksAndUnreadOnEveryDevice(t *testing.T) {
	chromium := lookTool(t, "chromium", "/usr/bin/chromium")
	nginx := lookTool(t, "nginx", "/usr/sbin/nginx")
	phase := phases(t)

	procs := testcluster.StartProcesses(t, 3, "--store", pgtest.Start(t))
	base := startNginx(t, nginx, procs).base
	phase("3 nodes with PostgreSQL behind nginx at " + base)
	browser := startBrowser(t, chromium)
	alice := openPage(t, browser, "alice", base+"/?user=alice")
	bob := openPage(t, browser, "bob", base+"/?user=bob")
	pages := []*page{alice, bob}
	alice.connectedNode(10 * time.Second)
	bob.connectedNode(10 * time.Second)

	// alice creates the group from the "New group" form.
	alice.do(chromedp.Click(chromedp.ID("new-group")))
	alice.waitFor("alice's page to show the new group form", `document.querySelector('#group-dialog').open`)
	alice.do(chromedp.SendKeys(chromedp.ID("group-name"), "team"),
		chromedp.SendKeys(chromedp.ID("group-members"), "bob, carol"))
	alice.screenshot("groups-alice-new-group.png")
	alice.do(chromedp.Click(chromedp.ID("group-create")))
	alice.waitFor("alice's page to open team, with its 3 members and the line of its creation",
		`document.querySelector('#conv-title').textContent === 'team' &&
		 !document.querySelector('#group-dialog').open &&
		 document.querySelector('#conv-sub').dataset.members === '3' &&
		 [...document.querySelectorAll('#messages [data-event=created]')].map((e) => e.textContent).join() === 'You created the group'`)
	bob.waitFor("bob's page to list team, unread: alice created it",
		unread("+team", "1"))
	phase("alice created team; bob's page lists it")

	hello := "Hello team, welcome!"
	alice.sendMessage(hello)
	alice.waitStatus(hello, "sent", "sent ✓")
	bob.waitFor("bob's page to count alice's message as unread too", unread("+team", "2"))
	bob.do(chromedp.Click(chromedp.CSS(`[data-conv="+team"]`)))
	bob.waitMessage(hello, "alice")
	bob.waitFor("bob's page to clear team's unread count once it is open", unread("+team", ""))
	alice.waitStatus(hello, "read", "read by bob ✓✓")
	// The page read both at once: one read frame for the burst.
	if reads := bob.readFrames("group", "team"); len(reads) != 1 {
		t.Fatalf("bob's page sent %d read frames for team when he opened it, want 1: %v", len(reads), reads)
	}
	alice.screenshot("groups-alice-read-by-bob.png")
	phase("bob read team; alice's message shows read by bob")

	// carol, who has never connected, signs in: the server's count.
	carol := openPage(t, browser, "carol", base+"/?user=carol")
	pages = append(pages, carol)
	carol.connectedNode(10 * time.Second)
	carol.waitFor("carol's page to list team with the 2 unread the server counts", unread("+team", "2"))
	carol.screenshot("groups-carol-unread-at-sign-in.png")
	carol.do(chromedp.Click(chromedp.CSS(`[data-conv="+team"]`)))
	carol.waitMessage(hello, "alice")
	alice.waitStatus(hello, "read", "read by everyone ✓✓")
	phase("carol signed in to 2 unread, and read them")

	// Members: alice is the admin; she adds dave and removes him again,
	// and bob's timeline says so.
	alice.do(chromedp.Click(chromedp.ID("members-toggle")))
	alice.waitFor("alice's member list: herself as admin, bob and carol, each with a Remove button",
		`(() => {
			const ms = [...document.querySelectorAll('#members-list [data-testid=member]')];
			return ms.map((m) => m.dataset.user + ':' + m.dataset.admin).join() === 'alice:true,bob:false,carol:false' &&
				document.querySelectorAll('#members-list [data-testid=member-remove]').length === 2 &&
				!document.querySelector('#member-add').hidden;
		})()`)
	alice.enterText("member-add-name", "dave")
	alice.waitFor("alice's member list to show dave", `!!document.querySelector('#members-list [data-user=dave]')`)
	bob.waitFor(`bob's timeline to say "alice added dave"`, noteText("added", "alice added dave"))
	alice.screenshot("groups-alice-members.png")
	alice.do(chromedp.Click(chromedp.CSS(`#members-list [data-user=dave] [data-testid=member-remove]`)))
	alice.waitFor("alice's member list to lose dave", `!document.querySelector('#members-list [data-user=dave]')`)
	bob.waitFor(`bob's timeline to say "alice removed dave"`, noteText("removed", "alice removed dave"))
	bob.do(chromedp.Click(chromedp.ID("members-toggle")))
	bob.waitFor("bob's member list: alice as admin, and no admin's controls for bob",
		`document.querySelector('#members-list [data-user=alice]')?.dataset.admin === 'true' &&
		 document.querySelectorAll('#members-list [data-testid=member]').length === 3 &&
		 document.querySelectorAll('#members-list [data-testid=member-remove]').length === 0 &&
		 document.querySelector('#member-add').hidden`)
	bob.screenshot("groups-bob-timeline-members.png")
	phase("alice added and removed dave; bob saw both")

	// bob's second device. His first one turns to a talk with carol, so
	// that neither has team or alice in view.
	bobPhone := openPage(t, browser, "bob's phone", base+"/?user=bob")
	pages = append(pages, bobPhone)
	bobPhone.connectedNode(10 * time.Second)
	bob.enterText("new-chat", "carol")
	bob.waitFor("bob's page to open the conversation with carol", `document.querySelector('#conv-title').textContent === 'carol'`)
	second := "Second round, everyone"
	alice.sendMessage(second)
	alice.waitStatus(second, "sent", "sent ✓")
	alice.enterText("new-chat", "bob")
	alice.waitFor("alice's page to open the conversation with bob", `document.querySelector('#conv-title').textContent === 'bob'`)
	direct := "Just between us, bob"
	alice.sendMessage(direct)
	alice.waitStatus(direct, "delivered", "delivered ✓")
	for _, p := range []*page{bob, bobPhone} {
		p.waitFor(p.name+" to count team's new message and alice's direct one as unread",
			unread("+team", "1")+" && "+unread("@alice", "1"))
	}
	bobPhone.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
	bobPhone.screenshot("groups-bob-phone-unread.png")

	// Read on the phone: the other device clears. And the other way round.
	bobPhone.do(chromedp.Click(chromedp.CSS(`[data-conv="+team"]`)))
	bobPhone.waitMessage(second, "alice")
	bob.waitFor("bob's first device to clear team once his phone read it", unread("+team", ""))
	bob.do(chromedp.Click(chromedp.CSS(`[data-conv="@alice"]`)))
	bob.waitMessage(direct, "alice")
	bobPhone.do(chromedp.Click(chromedp.ID("back")))
	bobPhone.waitFor("bob's phone to clear alice once his first device read her", unread("@alice", ""))
	alice.waitStatus(direct, "read", "read ✓✓")
	bobPhone.screenshot("groups-bob-phone-read.png")
	alice.screenshot("groups-alice-direct-read.png")
	phase("read on one of bob's devices, cleared on the other; alice's direct message read")

	// A page of alice's that was not open when bob read shows it read too:
	// her conversation list says how far bob read (peer_read).
	aliceLaptop := openPage(t, browser, "alice's laptop", base+"/?user=alice")
	pages = append(pages, aliceLaptop)
	aliceLaptop.connectedNode(10 * time.Second)
	aliceLaptop.do(chromedp.Click(chromedp.CSS(`[data-conv="@bob"]`)))
	aliceLaptop.waitStatus(direct, "read", "read ✓✓")
	phase("a page of alice's opened later shows her direct message read")

	// alice removes carol: carol's page keeps the conversation, read-only.
	alice.do(chromedp.Click(chromedp.CSS(`[data-conv="+team"]`)), chromedp.Click(chromedp.ID("members-toggle")))
	alice.do(chromedp.Click(chromedp.CSS(`#members-list [data-user=carol] [data-testid=member-remove]`)))
	carol.waitFor("carol's page to say she was removed, and let her write no more",
		noteText("removed", "alice removed you")+` &&
		 document.querySelector('#conv-sub').textContent === 'you are no longer a member' &&
		 document.querySelector('#composer').disabled`)
	carol.screenshot("groups-carol-removed.png")
	phase("carol removed: her page is read-only")

	// bob leaves from his first device: the group goes from both of his,
	// and alice's timeline says so.
	bob.do(chromedp.Click(chromedp.CSS(`[data-conv="+team"]`)), chromedp.Click(chromedp.ID("members-toggle")))
	bob.do(chromedp.Click(chromedp.ID("group-leave")))
	bob.waitFor("bob's Leave button to ask once more", `document.querySelector('#group-leave').textContent === 'Leave team? Click again'`)
	bob.do(chromedp.Click(chromedp.ID("group-leave")))
	for _, p := range []*page{bob, bobPhone} {
		p.waitFor(p.name+" to drop team", `!document.querySelector('[data-conv="+team"]')`)
	}
	alice.waitFor(`alice's timeline to say "bob left"`, noteText("left", "bob left"))
	phase("bob left team, from both his devices")
	alice.darkMode()
	alice.screenshot("groups-alice-dark.png")

	for _, p := range pages {
		wait.For(t, 3*time.Second, 50*time.Millisecond, p.checkFrames)
		p.checkNoExceptions()
		t.Logf("%s's page: %s, each id answered once, every send keyed", p.name, p.frameSummary())
	}
}

// unread is a page expression: the unread badge of conversation conv
// ("@bob", "+team") shows text ("" for none).
func unread(conv, text string) string {
	return fmt.Sprintf(`document.querySelector('[data-conv=%q] [data-testid=unread]')?.textContent === %q`, conv, text)
}

// noteText is a page expression: the open conversation's timeline has a
// line of event saying text.
func noteText(event, text string) string {
	return fmt.Sprintf(`[...document.querySelectorAll('#messages [data-event=%q]')].some((e) => e.textContent === %q)`, event, text)
}

// readFrames returns the read frames the page sent for a conversation: with
// is "with" or "group".
func (p *page) readFrames(field, name string) []string {
	var out []string
	for _, f := range p.sentFrames() {
		if f.Type != "read" {
			continue
		}
		var r map[string]any
		if json.Unmarshal([]byte(f.text), &r) == nil && r[field] == name {
			out = append(out, f.text)
		}
	}
	return out
}
