package node

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/shardchat/shard/router"
)

// While the receiver does not answer, pushes wait up to webhookQueue; the
// next one is refused at once, counted, and the router is never held up.
func TestWebhookQueueIsBoundedAndCountsWhatItDrops(t *testing.T) {
	stuck := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-stuck }))
	defer srv.Close()
	w, err := newWebhook(srv.URL, "k", 0, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { close(stuck); w.close() }()
	for range webhookQueue + 10 {
		w.offline(router.OfflineMessage{To: "bob", From: "alice", Mid: "m", Body: "hi"})
	}
	var m dto.Metric
	if err := w.sent.WithLabelValues("dropped").Write(&m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetCounter().GetValue(); got != 10 {
		t.Fatalf("%v pushes counted as dropped, want the 10 past the bound of %d", got, webhookQueue)
	}
	if held := w.held.Load(); held != webhookQueue {
		t.Fatalf("%d pushes held, want %d", held, webhookQueue)
	}
}
