package node_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/node"
	"github.com/shardchat/shard/protocol"
)

// withData runs a single node with the embedded store.
func withData(t *testing.T) *testcluster.Cluster {
	dir := t.TempDir()
	return testcluster.Start(t, 1, func(_ int, cfg *node.Config) {
		cfg.Data = dir
		cfg.APIKey = "k"
	})
}

func TestOfflineMessagesWaitInTheInboxAndSyncInOrder(t *testing.T) {
	c := withData(t)
	ctx := ctxFor(t)
	alice := c.Dial(0, "alice")
	if !alice.Welcome().Store {
		t.Fatal("the welcome of a node with a store does not say so")
	}
	for i := 1; i <= 5; i++ {
		ack, err := alice.Send(ctx, "bob", fmt.Sprintf("m%d", i))
		if err != nil || ack.Status != protocol.StatusStored || ack.Seq != int64(i) {
			t.Fatalf("send %d to offline bob: %+v %v, want stored with seq %d", i, ack, err, i)
		}
	}
	bob := c.Dial(0, "bob")
	ack, err := bob.Sync(ctx, 0)
	if err != nil || ack.Last != 5 || ack.More {
		t.Fatalf("sync: %+v %v, want last 5, no more", ack, err)
	}
	for i := 1; i <= 5; i++ {
		m := recvMsg(t, bob, "bob")
		if m.Seq != int64(i) || m.Body != fmt.Sprintf("m%d", i) || m.From != "alice" {
			t.Fatalf("synced message %d: %+v", i, m)
		}
	}
	// Live messages carry the next offset; the sender's other device gets
	// its copy with the offset of the sender's own inbox.
	alicePhone := c.Dial(0, "alice")
	ack, err = alice.Send(ctx, "bob", "live")
	if err != nil || ack.Status != protocol.StatusDelivered || ack.Seq != 6 {
		t.Fatalf("live send: %+v %v, want delivered with seq 6", ack, err)
	}
	if m := recvMsg(t, bob, "bob"); m.Seq != 6 || m.Body != "live" {
		t.Fatalf("bob got %+v", m)
	}
	if m := recvMsg(t, alicePhone, "alice's phone"); m.Seq != 6 || m.Body != "live" || m.To != "bob" {
		t.Fatalf("alice's phone got %+v, want her copy with her inbox offset 6", m)
	}
	// A sync after the last offset seen returns nothing more.
	if ack, err := bob.Sync(ctx, 6); err != nil || ack.Last != 6 || ack.More {
		t.Fatalf("sync after 6: %+v %v", ack, err)
	}
	noMsg(t, bob, "bob after an empty sync")
}

func TestResendWithTheSameKeyIsStoredOnce(t *testing.T) {
	c := withData(t)
	ctx := ctxFor(t)
	alice, bob := c.Dial(0, "alice"), c.Dial(0, "bob")
	answers := make(chan client.Ack, 2)
	for i := 0; i < 2; i++ {
		f := client.Frame{Type: "send", To: "bob", Body: "once", Key: "retry-7"}
		if err := alice.SendAsync(f, func(a client.Ack, err error) {
			if err != nil {
				t.Errorf("send: %v", err)
			}
			answers <- a
		}); err != nil {
			t.Fatal(err)
		}
	}
	first, second := <-answers, <-answers
	if first.Status != protocol.StatusDelivered || second.Status != first.Status || second.Seq != first.Seq {
		t.Fatalf("first answer %+v, resend %+v: want the same status and offset", first, second)
	}
	recvMsg(t, bob, "bob")
	if err := bob.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	noMsg(t, bob, "bob (a resent message)")
	if ack, _ := bob.Sync(ctx, 0); ack.Last != 1 {
		t.Fatalf("bob's inbox holds %d messages, want 1", ack.Last)
	}
}

func TestJoinSinceReplaysTheRoomThenGoesLive(t *testing.T) {
	c := withData(t)
	ctx := ctxFor(t)
	carol := c.Dial(0, "carol")
	if err := carol.Join(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if ack, err := carol.SendRoom(ctx, "lobby", fmt.Sprintf("r%d", i)); err != nil || ack.Seq != int64(i) {
			t.Fatalf("room send %d: %+v %v", i, ack, err)
		}
	}
	erin := c.Dial(0, "erin")
	if err := erin.JoinSince(ctx, "lobby", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := carol.SendRoom(ctx, "lobby", "r4"); err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 4; i++ {
		m := recvMsg(t, erin, "erin")
		if m.Seq != int64(i) || m.Body != fmt.Sprintf("r%d", i) {
			t.Fatalf("erin's message %d: %+v", i, m)
		}
	}
	if err := erin.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	noMsg(t, erin, "erin (a duplicate where replay meets live)")

	var page struct {
		Messages []struct {
			Seq  int64  `json:"seq"`
			Body string `json:"body"`
		} `json:"messages"`
		Last int64 `json:"last"`
		More bool  `json:"more"`
	}
	req, _ := http.NewRequest("GET", c.HTTP(0)+"/api/rooms/lobby/messages?after=1&limit=2", nil)
	req.Header.Set("Authorization", "Bearer k")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := decodeJSON(resp, &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 2 || page.Messages[0].Seq != 2 || page.Last != 4 || !page.More {
		t.Fatalf("history page %+v, want offsets 2 and 3 of 4, more", page)
	}
}

// dirSize is the bytes of the files under dir.
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// One user cannot fill the disk: past --store-rate bytes a second (a
// bucket of 10 s of it) a send is answered rate_limited and nothing is
// stored, while other users store as before.
func TestStoreRateBoundsWhatOneUserStores(t *testing.T) {
	const rate = 100_000 // bytes a second: a bucket of 1 MB
	dir := t.TempDir()
	c := testcluster.Start(t, 1, func(_ int, cfg *node.Config) {
		cfg.Data = dir
		cfg.StoreRate = rate
	})
	mallory, bob := c.Dial(0, "mallory"), c.Dial(0, "bob")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	body := strings.Repeat("x", 60_000)
	size0 := dirSize(dir)
	start := time.Now()
	const n = 300 // 18 MB
	stored, limited := 0, 0
	for i := 0; i < n; i++ {
		ack, err := mallory.Send(ctx, fmt.Sprintf("ghost%d", i), body)
		var e *client.Error
		switch {
		case err == nil && ack.Status == protocol.StatusStored:
			stored++
		case errors.As(err, &e) && e.Code == protocol.CodeRateLimited && e.Message != "":
			limited++
		default:
			t.Fatalf("send %d: %+v %v, want stored or rate_limited", i, ack, err)
		}
	}
	took := time.Since(start)
	t.Logf("%d sends of 60 KB in %s: %d stored, %d rate_limited; the store grew by %.1f MB",
		n, took.Round(time.Millisecond), stored, limited, float64(dirSize(dir)-size0)/1e6)
	// Each message is kept twice, in ghost's inbox and in mallory's.
	if most := (10*rate + took.Seconds()*rate) / (2 * 60_000); float64(stored) > most+1 {
		t.Errorf("%d of %d messages of 60 KB stored in %s, want at most %.0f (--store-rate %d, a bucket of 10 s)", stored, n, took, most+1, rate)
	}
	if ack, err := bob.Send(ctx, "ghost0", body); err != nil || ack.Status != protocol.StatusStored {
		t.Fatalf("another user, while mallory is limited: %+v %v, want stored", ack, err)
	}
	wait.For(t, 5*time.Second, 100*time.Millisecond, func() error {
		if _, err := mallory.Send(ctx, "ghost0", body); err != nil {
			return fmt.Errorf("mallory, once his bucket refilled: %v", err)
		}
		return nil
	})
}
