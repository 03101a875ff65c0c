package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/store/pgtest"
)

// groupCluster is 3 processes on one PostgreSQL store, for the group tests.
type groupCluster struct {
	t     *testing.T
	ctx   context.Context
	nodes []*clusterNode
}

const groupAPIKey = "group-key"

func startGroupCluster(t *testing.T, ctx context.Context) *groupCluster {
	url := pgtest.Start(t)
	gc := &groupCluster{t: t, ctx: ctx}
	for i, host := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		n := newClusterNode(t, fmt.Sprintf("n%d", i+1), host)
		// --rate: TestSendsRacingARemovalFromAnotherNode sends 600 frames from
		// one connection as fast as the cluster answers them, past the
		// default 200 a second once appends are quick; the rate limit is not
		// what these tests are about.
		n.Args = append(n.Args, "--store", url, "--api-key", groupAPIKey, "--rate", "100000")
		seed := ""
		if i > 0 {
			seed = gc.nodes[0].Gossip
		}
		n.start(t, seed)
		gc.nodes = append(gc.nodes, n)
	}
	gc.waitRing()
	return gc
}

func (gc *groupCluster) waitRing() {
	gc.t.Helper()
	wait.For(gc.t, 20*time.Second, 50*time.Millisecond, func() error {
		for _, n := range gc.nodes {
			if got := ringSize(n); got != len(gc.nodes) {
				return fmt.Errorf("%s routes by a ring of %d", n.Name, got)
			}
		}
		return nil
	})
}

// dial connects user to node i; with reconnect it moves to the other nodes
// when its node drains.
func (gc *groupCluster) dial(i int, user string, reconnect bool) *client.Client {
	gc.t.Helper()
	o := client.Options{URL: gc.nodes[i].url(), User: user, Reconnect: reconnect,
		BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond}
	for k := 1; k < len(gc.nodes); k++ {
		o.Fallbacks = append(o.Fallbacks, gc.nodes[(i+k)%len(gc.nodes)].url())
	}
	cl, err := client.Dial(gc.ctx, o)
	if err != nil {
		gc.t.Fatalf("dial %s on %s: %v", user, gc.nodes[i].Name, err)
	}
	gc.t.Cleanup(func() { cl.Close() })
	return cl
}

// api calls node i's HTTP API and decodes its JSON answer into v.
func (gc *groupCluster) api(i int, method, path string, v any) {
	gc.t.Helper()
	req, err := http.NewRequestWithContext(gc.ctx, method, "http://"+gc.nodes[i].HTTP+path, nil)
	if err != nil {
		gc.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+groupAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		gc.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		gc.t.Fatalf("%s %s on %s: %d %s", method, path, gc.nodes[i].Name, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		gc.t.Fatalf("%s %s: %q: %v", method, path, b, err)
	}
}

// restartEach drains every node in turn with SIGTERM, which must exit 0,
// and starts it again under the same name, once the ring is whole again.
func (gc *groupCluster) restartEach() {
	gc.t.Helper()
	for i, n := range gc.nodes {
		n.proc.Signal(syscall.SIGTERM)
		if code := n.proc.Wait(15 * time.Second); code != 0 {
			gc.t.Fatalf("%s exited %d after SIGTERM, want 0\n%s", n.Name, code, tail(n.proc.Output()))
		}
		n.start(gc.t, gc.nodes[(i+1)%len(gc.nodes)].Gossip)
		gc.waitRing()
	}
}

// syncGroup pages through group's stream after offset after, as cl's user
// sees it, and returns what came, in order.
func syncGroup(t *testing.T, ctx context.Context, cl *client.Client, group string, after int64) []client.Msg {
	t.Helper()
	var got []client.Msg
	for {
		ack, err := cl.SyncGroup(ctx, group, after)
		if err != nil {
			t.Fatalf("sync %s after %d: %v", group, after, err)
		}
		for len(cl.Messages()) > 0 { // the page was queued before the ack
			m := <-cl.Messages()
			if m.Group == group {
				got = append(got, m)
				after = max(after, m.Seq)
			}
		}
		if !ack.More {
			return got
		}
	}
}

// groupSend is one acked group message.
type groupSend struct {
	from, body string
	seq        int64
}

// TestGroupsAcrossNodesWithPostgres runs a group of 30 members over 3
// processes on PostgreSQL, half of them offline: every online member gets
// each message once, in offset order per sender; each offline member syncs
// all of them after reconnecting to another node; membership and read
// offsets survive a rolling restart of every node; a removed member gets
// nothing sent after the removal's ack.
func TestGroupsAcrossNodesWithPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level store test")
	}
	const (
		members = 30
		senders = 5
		each    = 20 // messages per sender
		group   = "crew"
	)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	gc := startGroupCluster(t, ctx)
	name := func(i int) string { return fmt.Sprintf("m%02d", i) }
	online := map[int]*client.Client{}
	var offline []int
	for i := 0; i < members; i++ {
		if i%2 == 1 {
			offline = append(offline, i)
			// Seen once, on node i%3, before the group is made.
			gc.dial(i%3, name(i), false).Close()
			continue
		}
		online[i] = gc.dial(i%3, name(i), true)
	}
	var others []string
	for i := 1; i < members; i++ {
		others = append(others, name(i))
	}
	admin := online[0]
	if ack, err := admin.CreateGroup(ctx, group, others...); err != nil || ack.Seq != 1 {
		t.Fatalf("create: %+v %v", ack, err)
	}

	// Senders on every node, at once; each one's messages in order.
	var mu sync.Mutex
	var sent []groupSend
	var wg sync.WaitGroup
	for s := 0; s < senders; s++ {
		i := 2 * s
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < each; k++ {
				body := fmt.Sprintf("%s %d", name(i), k)
				ack, err := online[i].SendGroup(ctx, group, body)
				if err != nil || ack.Status != protocol.StatusSent {
					t.Errorf("%s's send %d: %+v %v", name(i), k, ack, err)
					return
				}
				mu.Lock()
				sent = append(sent, groupSend{name(i), body, ack.Seq})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	sort.Slice(sent, func(a, b int) bool { return sent[a].seq < sent[b].seq })
	last := sent[len(sent)-1].seq
	if want := int64(1 + senders*each); last != want {
		t.Fatalf("the last message is at %d, want %d: offsets are dense", last, want)
	}

	// Every online member: each message once, per sender in offset order.
	for i, cl := range online {
		want := 0
		for _, s := range sent {
			if s.from != name(i) {
				want++
			}
		}
		got := map[int64]bool{}
		lastFrom := map[string]int64{}
		if name(i) != name(0) {
			if m := nextGroupMsg(t, cl, name(i), group); m.Event != protocol.EventCreated {
				t.Fatalf("%s's first message of the group is %+v, want the created event", name(i), m)
			}
		}
		for len(got) < want {
			m := nextGroupMsg(t, cl, name(i), group)
			switch {
			case m.From == name(i):
				t.Fatalf("%s got its own message %+v on its sending connection", name(i), m)
			case got[m.Seq]:
				t.Fatalf("%s got offset %d twice", name(i), m.Seq)
			case m.Seq <= lastFrom[m.From]:
				t.Fatalf("%s got %s's offset %d after its %d", name(i), m.From, m.Seq, lastFrom[m.From])
			}
			got[m.Seq], lastFrom[m.From] = true, m.Seq
		}
		if err := cl.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		if len(cl.Messages()) > 0 {
			t.Fatalf("%s got more than the %d messages sent: %+v", name(i), want, <-cl.Messages())
		}
	}

	// Every offline member, on another node than it was seen on: the whole
	// stream from the event that added it, in order, gap-free, once.
	for _, i := range offline {
		cl := gc.dial((i+1)%3, name(i), false)
		got := syncGroup(t, ctx, cl, group, 0)
		if int64(len(got)) != last {
			t.Fatalf("%s synced %d messages, want %d", name(i), len(got), last)
		}
		for k, m := range got {
			if m.Seq != int64(k+1) || (k > 0 && (m.From != sent[k-1].from || m.Body != sent[k-1].body)) {
				t.Fatalf("%s's synced message %d is %+v", name(i), k, m)
			}
		}
		// Read half of it; the online members read it all.
		if err := cl.ReadGroup(ctx, group, last/2); err != nil {
			t.Fatal(err)
		}
		cl.Close()
	}
	for _, cl := range online {
		if err := cl.ReadGroup(ctx, group, last); err != nil {
			t.Fatal(err)
		}
	}
	readOf := func(i int) int64 {
		if i%2 == 1 {
			return last / 2
		}
		return last
	}
	checkState := func(when string) {
		t.Helper()
		for k := range gc.nodes {
			var info struct {
				Members []struct {
					User  string
					Admin bool
				}
				Last int64
			}
			gc.api(k, "GET", "/api/groups/"+group, &info)
			if len(info.Members) != members || info.Members[0].User != name(0) || !info.Members[0].Admin || info.Last != last {
				t.Fatalf("%s: %s says the group is %+v, want %d members, %s its admin, last %d", when, gc.nodes[k].Name, info, members, name(0), last)
			}
		}
		for i := 0; i < members; i++ {
			var v struct{ Conversations []client.Conversation }
			gc.api(i%3, "GET", "/api/users/"+name(i)+"/conversations", &v)
			cv := v.Conversations
			if len(cv) != 1 || cv[0].Group != group || cv[0].Last != last || cv[0].Read != readOf(i) || cv[0].Unread != last-readOf(i) {
				t.Fatalf("%s: %s's conversations are %+v, want %s read up to %d of %d", when, name(i), cv, group, readOf(i), last)
			}
			if cl := online[i]; cl != nil {
				frame, err := cl.Conversations(ctx)
				if err != nil || !reflect.DeepEqual(frame, cv) {
					t.Fatalf("%s: %s's conversations frame %+v (%v), the API %+v", when, name(i), frame, err, cv)
				}
			}
		}
	}
	checkState("before the restarts")
	gc.restartEach()
	for _, cl := range online { // each is connected again, somewhere
		if err := cl.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
	checkState("after every node restarted")

	// After the restarts, a message still reaches every online member, on
	// whichever node it now is.
	ack, err := online[2].SendGroup(ctx, group, "after the restarts")
	if err != nil || ack.Seq != last+1 {
		t.Fatalf("send after the restarts: %+v %v", ack, err)
	}
	for i, cl := range online {
		if i == 2 {
			continue
		}
		if m := nextGroupMsg(t, cl, name(i), group); m.Seq != last+1 {
			t.Fatalf("%s got %+v, want the message sent after the restarts", name(i), m)
		}
	}

	// A removed member gets its removal, then nothing sent after its ack.
	removed := online[4]
	rm, err := admin.RemoveMember(ctx, group, name(4))
	if err != nil {
		t.Fatal(err)
	}
	if m := nextGroupMsg(t, removed, name(4), group); m.Event != protocol.EventRemoved || m.User != name(4) || m.Seq != rm.Seq {
		t.Fatalf("%s got %+v, want its removal at %d", name(4), m, rm.Seq)
	}
	for k := 0; k < 10; k++ {
		if _, err := online[2*(k%2)].SendGroup(ctx, group, fmt.Sprint("after the removal ", k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := removed.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if len(removed.Messages()) > 0 {
		t.Fatalf("%s got %+v after its removal", name(4), <-removed.Messages())
	}
	var e *client.Error
	if _, err := removed.SendGroup(ctx, group, "let me back"); !errors.As(err, &e) || e.Code != protocol.CodeNotMember {
		t.Fatalf("a removed member's send: %v, want not_member", err)
	}
	if _, err := removed.SyncGroup(ctx, group, 0); !errors.As(err, &e) || e.Code != protocol.CodeNotMember {
		t.Fatalf("a removed member's sync: %v, want not_member", err)
	}
}

// nextGroupMsg waits for cl's next message of group, skipping others.
func nextGroupMsg(t *testing.T, cl *client.Client, who, group string) client.Msg {
	t.Helper()
	return testcluster.NextMsg(t, cl, who+" (in "+group+")", 10*time.Second, func(m client.Msg) bool { return m.Group == group })
}

// TestSendsRacingARemovalFromAnotherNode: a member sends a burst to a group
// while an admin on another node removes a third member, connected on two
// nodes. Whatever the timing, both of that member's devices get exactly the
// messages whose offsets are below the removal's, never one above: the
// store decides membership in the transaction that appends. Many rounds,
// with the removal falling inside the burst, show it is never "sometimes".
func TestSendsRacingARemovalFromAnotherNode(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level store test")
	}
	const (
		rounds = 20
		burst  = 30
	)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	gc := startGroupCluster(t, ctx)
	admin, sender := gc.dial(0, "admin", false), gc.dial(1, "sender", false)
	victim := []*client.Client{gc.dial(2, "victim", false), gc.dial(0, "victim", false)}
	inside := 0
	for r := 0; r < rounds; r++ {
		group := fmt.Sprintf("race%d", r)
		if _, err := admin.CreateGroup(ctx, group, "sender", "victim"); err != nil {
			t.Fatal(err)
		}
		type answer struct {
			seq int64
			err error
		}
		answers := make(chan answer, burst)
		acked := make(chan struct{}, burst)
		for k := 0; k < burst; k++ {
			f := client.Frame{Type: protocol.TypeSend, Group: group, Body: fmt.Sprint(k)}
			if err := sender.SendAsync(f, func(a client.Ack, err error) {
				answers <- answer{a.Seq, err}
				acked <- struct{}{}
			}); err != nil {
				t.Fatal(err)
			}
		}
		// The removal goes once a few of the burst are in, a different
		// number each round, while the rest are still being stored.
		for k := 0; k < 3+r%10; k++ {
			select { // every send is answered, or fails with its connection
			case <-acked:
			case <-ctx.Done():
				t.Fatalf("round %d: %d of the burst answered", r, k)
			}
		}
		rm, err := admin.RemoveMember(ctx, group, "victim")
		if err != nil {
			t.Fatal(err)
		}
		below := map[int64]bool{}
		above := 0
		for k := 0; k < burst; k++ {
			var a answer
			select {
			case a = <-answers:
			case <-ctx.Done():
				t.Fatalf("round %d: %d of the burst answered", r, k)
			}
			if a.err != nil {
				t.Fatalf("round %d: a send: %v", r, a.err)
			}
			if a.seq < rm.Seq {
				below[a.seq] = true
			} else {
				above++
			}
		}
		if len(below) > 0 && above > 0 {
			inside++
		}
		// Every answer is in, so every delivery was handed to the victim's
		// connections; what a ping finds after is all there is.
		for d, cl := range victim {
			if err := cl.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			got := map[int64]bool{}
			for done := false; !done; {
				select {
				case m := <-cl.Messages():
					if m.Group == group && m.Event == "" {
						got[m.Seq] = true
					}
				default:
					done = true
				}
			}
			if !reflect.DeepEqual(got, below) {
				t.Fatalf("round %d: the victim's device %d got offsets %v, want exactly those below the removal's %d: %v",
					r, d, keys(got), rm.Seq, keys(below))
			}
		}
	}
	t.Logf("%d of %d removals fell inside the burst", inside, rounds)
	if inside < rounds/2 {
		t.Fatalf("only %d of %d removals fell inside their burst: the race was not run", inside, rounds)
	}
}

func keys(m map[int64]bool) string {
	var seqs []int64
	for k := range m {
		seqs = append(seqs, k)
	}
	sort.Slice(seqs, func(a, b int) bool { return seqs[a] < seqs[b] })
	return strings.Trim(fmt.Sprint(seqs), "[]")
}
