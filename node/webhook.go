package node

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardchat/shard/router"
)

// The offline-push hook (--webhook): for every message stored for a
// recipient with no connection, the node POSTs a small JSON document to the
// app's backend, which may send a mobile push. It is at least once (a
// receiver deduplicates by mid and to), retried with jittered backoff for up
// to webhookGiveUp, and never in the path of the ack: the router hands the
// message over without waiting, into a bounded queue whose overflow is
// counted and logged.

// Bounds of the hook.
const (
	// webhookQueue bounds the pushes waiting on one node, queued or between
	// retries: 10,000 is minutes of a busy node's offline traffic while the
	// receiver is down, and about 2 MB.
	webhookQueue = 10000
	// webhookWorkers bounds the requests under way at once.
	webhookWorkers = 4
	// webhookTimeout bounds one request to the receiver.
	webhookTimeout = 10 * time.Second
	// webhookGiveUp is how long a push is retried after it was stored.
	webhookGiveUp = 10 * time.Minute
	// webhookMaxBackoff caps the wait between two tries.
	webhookMaxBackoff = time.Minute
	// webhookPreview is the most characters of the body a push carries.
	webhookPreview = 100
	// DefaultWebhookBackoff is the first wait before a retry; it doubles.
	DefaultWebhookBackoff = time.Second
)

// WebhookSignatureHeader carries "sha256=" and the hex HMAC-SHA256 of the
// body under --webhook-secret.
const WebhookSignatureHeader = "X-Shard-Signature"

// Push is the JSON body of one push.
type Push struct {
	To      string `json:"to"`
	From    string `json:"from"`
	Group   string `json:"group,omitempty"`
	Mid     string `json:"mid"`
	Seq     int64  `json:"seq"`
	TS      int64  `json:"ts"`
	Preview string `json:"preview"`
}

type pushJob struct {
	body  []byte
	first time.Time // when it was queued: it is retried until webhookGiveUp after
	tries int
}

// webhook sends the pushes of one node.
type webhook struct {
	url     string
	secret  []byte
	backoff time.Duration
	client  *http.Client
	log     *slog.Logger

	queue   chan pushJob
	held    atomic.Int64 // queued or waiting for a retry, at most webhookQueue
	dropped atomic.Int64 // refused as past the bound, not yet logged
	sent    *prometheus.CounterVec
	stop    chan struct{}
	wg      sync.WaitGroup
}

func newWebhook(rawURL, secret string, backoff time.Duration, log *slog.Logger, reg prometheus.Registerer) (*webhook, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("webhook %q: want an http:// or https:// URL", rawURL)
	}
	if backoff <= 0 {
		backoff = DefaultWebhookBackoff
	}
	w := &webhook{
		url:     rawURL,
		secret:  []byte(secret),
		backoff: backoff,
		client:  &http.Client{Timeout: webhookTimeout},
		log:     log,
		queue:   make(chan pushJob, webhookQueue),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shard_webhook_pushes_total",
			Help: "Offline pushes by outcome: sent (the receiver answered 2xx), retried, gave_up, dropped (queue full)."}, []string{"result"}),
		stop: make(chan struct{}),
	}
	reg.MustRegister(w.sent, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shard_webhook_queued",
		Help: "Offline pushes waiting on this node, queued or between retries."}, func() float64 { return float64(w.held.Load()) }))
	w.wg.Add(webhookWorkers + 1)
	for range webhookWorkers {
		go w.work()
	}
	go w.logDrops()
	return w, nil
}

// offline queues the push of m; it never blocks.
func (w *webhook) offline(m router.OfflineMessage) {
	preview := []rune(m.Body)
	if len(preview) > webhookPreview {
		preview = preview[:webhookPreview]
	}
	body, _ := json.Marshal(Push{To: m.To, From: m.From, Group: m.Group, Mid: m.Mid, Seq: m.Seq, TS: m.TS, Preview: string(preview)})
	if w.held.Add(1) > webhookQueue {
		w.held.Add(-1)
		w.drop()
		return
	}
	w.queue <- pushJob{body: body, first: time.Now()} // room is reserved by held
}

func (w *webhook) drop() {
	w.dropped.Add(1)
	w.sent.WithLabelValues("dropped").Inc()
}

func (w *webhook) work() {
	defer w.wg.Done()
	for {
		select {
		case <-w.stop:
			return
		case j := <-w.queue:
			if w.post(j.body) {
				w.sent.WithLabelValues("sent").Inc()
				w.held.Add(-1)
				continue
			}
			j.tries++
			// Full jitter: a receiver that comes back is not met by every
			// node's retries at once.
			delay := rand.N(min(w.backoff<<min(j.tries-1, 20), webhookMaxBackoff)) + time.Millisecond
			if time.Since(j.first)+delay > webhookGiveUp {
				w.sent.WithLabelValues("gave_up").Inc()
				w.held.Add(-1)
				w.log.Warn("offline push given up", "tries", j.tries, "after", time.Since(j.first).Round(time.Second))
				continue
			}
			w.sent.WithLabelValues("retried").Inc()
			time.AfterFunc(delay, func() {
				select {
				case w.queue <- j:
				case <-w.stop:
				}
			})
		}
	}
}

// post sends one push and reports whether the receiver took it.
func (w *webhook) post(body []byte) bool {
	ctx, cancel := context.WithTimeout(context.Background(), webhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(WebhookSignatureHeader, SignWebhook(w.secret, body))
	resp, err := w.client.Do(req)
	if err != nil {
		w.log.Debug("offline push failed", "err", err)
		return false
	}
	resp.Body.Close()
	return resp.StatusCode/100 == 2
}

// SignWebhook is the signature header's value for body under secret, as a
// receiver computes it to check a push.
func SignWebhook(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// logDrops says, at most every 10 s, how many pushes the full queue refused.
func (w *webhook) logDrops() {
	defer w.wg.Done()
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			if n := w.dropped.Swap(0); n > 0 {
				w.log.Warn("offline pushes dropped: queue full", "pushes", n, "max", webhookQueue)
			}
		}
	}
}

// close stops the hook; pushes still queued or waiting are lost.
func (w *webhook) close() {
	close(w.stop)
	w.wg.Wait()
}
