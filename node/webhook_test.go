package node_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/node"
	"github.com/shardchat/shard/protocol"
)

// pushReceiver is the app's backend: it refuses its first answers, checks
// every signature, and hands over the pushes it took.
type pushReceiver struct {
	t      *testing.T
	secret string
	srv    *httptest.Server

	mu      sync.Mutex
	refuse  int // answers still to fail with 503
	hold    chan struct{}
	bad     int // requests with a wrong signature
	pushes  chan node.Push
	answers int
}

func newPushReceiver(t *testing.T, secret string, refuse int) *pushReceiver {
	p := &pushReceiver{t: t, secret: secret, refuse: refuse, hold: make(chan struct{}), pushes: make(chan node.Push, 100)}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-p.hold
		body, _ := io.ReadAll(r.Body)
		p.mu.Lock()
		defer p.mu.Unlock()
		p.answers++
		if r.Header.Get(node.WebhookSignatureHeader) != node.SignWebhook([]byte(p.secret), body) {
			p.bad++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if p.refuse > 0 {
			p.refuse--
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var push node.Push
		if err := json.Unmarshal(body, &push); err != nil {
			t.Errorf("push %q: %v", body, err)
		}
		p.pushes <- push
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *pushReceiver) next(t *testing.T) node.Push {
	t.Helper()
	select {
	case push := <-p.pushes:
		return push
	case <-time.After(10 * time.Second):
		t.Fatal("the push receiver got no push")
		return node.Push{}
	}
}

// A message stored for a user with no connection is pushed to the app's
// backend: signed, retried until the backend takes it, and never in the way
// of the sender's ack.
func TestOfflineMessageIsPushedToTheWebhookAndRetried(t *testing.T) {
	recv := newPushReceiver(t, "s3cret", 2)
	dir := t.TempDir()
	c := testcluster.Start(t, 1, func(_ int, cfg *node.Config) {
		cfg.Data = dir
		cfg.Webhook = recv.srv.URL
		cfg.WebhookSecret = "s3cret"
		cfg.WebhookBackoff = 10 * time.Millisecond
	})
	ctx := ctxFor(t)
	alice := c.Dial(0, "alice")
	long := strings.Repeat("é", 150)
	// The receiver holds every request until the ack is in: the ack does
	// not wait for the push.
	ack, err := alice.Send(ctx, "bob", long)
	if err != nil || ack.Status != protocol.StatusStored {
		t.Fatalf("send to offline bob: %+v %v, want stored", ack, err)
	}
	close(recv.hold)
	push := recv.next(t)
	if push.To != "bob" || push.From != "alice" || push.Seq != ack.Seq || push.Mid == "" || push.Group != "" ||
		push.Preview != strings.Repeat("é", 100) || push.TS == 0 {
		t.Fatalf("push %+v, want bob's message at %d with a 100-character preview", push, ack.Seq)
	}
	recv.mu.Lock()
	bad, answers := recv.bad, recv.answers
	recv.mu.Unlock()
	if bad != 0 || answers != 3 {
		t.Fatalf("%d requests with a wrong signature, %d answers; want 0 and 3 (two refused, then taken)", bad, answers)
	}

	// Delivered live: no push. A group member with no connection: a push
	// naming the group.
	bob := c.Dial(0, "bob")
	if ack, err := alice.Send(ctx, "bob", "live"); err != nil || ack.Status != protocol.StatusDelivered {
		t.Fatalf("send to bob: %+v %v", ack, err)
	}
	recvMsg(t, bob, "bob")
	if _, err := alice.CreateGroup(ctx, "team", "bob", "carol"); err != nil {
		t.Fatal(err)
	}
	gack, err := alice.SendGroup(ctx, "team", "standup")
	if err != nil {
		t.Fatal(err)
	}
	push = recv.next(t)
	if push.To != "carol" || push.Group != "team" || push.Seq != gack.Seq || push.Preview != "standup" {
		t.Fatalf("push %+v, want carol's for team at %d", push, gack.Seq)
	}
	select {
	case extra := <-recv.pushes:
		t.Fatalf("a push for a connected user or a second one: %+v", extra)
	default:
	}
	wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if got := c.Counter(0, "shard_webhook_pushes_total", "result=sent"); got != 2 {
			return fmt.Errorf("shard_webhook_pushes_total{result=sent} = %v, want 2", got)
		}
		return nil
	})
}
