package node

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardchat/shard/store"
)

// meteredStore is the node's message store with what it costs and how often
// it fails as metrics, for the dashboard and alerts of deploy/: every ack of
// a send waits for an append, so its latency is the ack's floor. The store's
// own background retention does not pass through it; the store logs its
// failures.
type meteredStore struct {
	store.Store
	appendSeconds prometheus.Histogram
	errors        *prometheus.CounterVec // op
}

// Store operations, the op label of shard_store_errors_total.
const (
	storeOpAppend = "append"
	storeOpAnswer = "record_answer"
	storeOpRead   = "read"
)

// appendBuckets span the embedded engine's one-appender p99 (0.35 ms) to
// past the router's store timeout: a slow disk or a far PostgreSQL shows as
// its own band, not as the top bucket.
var appendBuckets = []float64{0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// meterStore wraps st and registers its metrics with reg.
func meterStore(st store.Store, reg prometheus.Registerer) store.Store {
	s := &meteredStore{
		Store: st,
		appendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shard_store_append_seconds",
			Help:    "Time a message store append took, until durable (or failed).",
			Buckets: appendBuckets,
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shard_store_errors_total",
			Help: "Message store operations of this node that failed, by op: append, record_answer, read.",
		}, []string{"op"}),
	}
	// Every op's series exists from the start, so that a rate over it is 0,
	// not absent, before the first error.
	for _, op := range []string{storeOpAppend, storeOpAnswer, storeOpRead} {
		s.errors.WithLabelValues(op)
	}
	reg.MustRegister(s.appendSeconds, s.errors)
	return s
}

// failed counts err against op. A caller that gave up (context.Canceled:
// a client gone, a drain) is not the store failing.
func (s *meteredStore) failed(op string, err error) {
	if err != nil && !errors.Is(err, context.Canceled) {
		s.errors.WithLabelValues(op).Inc()
	}
}

func (s *meteredStore) Append(ctx context.Context, a store.Append) (store.Appended, error) {
	start := time.Now()
	res, err := s.Store.Append(ctx, a)
	s.appendSeconds.Observe(time.Since(start).Seconds())
	s.failed(storeOpAppend, err)
	return res, err
}

// RecordAnswers counts a failure once for each answer of the call, not
// once for the call: a batch can hold thousands.
func (s *meteredStore) RecordAnswers(ctx context.Context, answers []store.KeyedAnswer) error {
	err := s.Store.RecordAnswers(ctx, answers)
	if err != nil && !errors.Is(err, context.Canceled) {
		s.errors.WithLabelValues(storeOpAnswer).Add(float64(len(answers)))
	}
	return err
}

func (s *meteredStore) Read(ctx context.Context, st store.Stream, after int64, limit int) ([]store.Message, int64, bool, error) {
	msgs, last, more, err := s.Store.Read(ctx, st, after, limit)
	s.failed(storeOpRead, err)
	return msgs, last, more, err
}
