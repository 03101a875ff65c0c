package node

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/shardchat/shard/store"
)

// TestStoreMetricsCountAppendsAndFailures: an operator sees every append's
// latency, and an error for each failed operation, but none for a caller
// that gave up.
func TestStoreMetricsCountAppendsAndFailures(t *testing.T) {
	ctx := context.Background()
	engine, err := store.Open(ctx, t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	st := meterStore(engine, reg).(*meteredStore)
	errs := func(op string) float64 { return sample(t, st.errors.WithLabelValues(op)).GetCounter().GetValue() }
	appends := func() uint64 { return sample(t, st.appendSeconds).GetHistogram().GetSampleCount() }

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := 0
	for _, f := range families {
		if f.GetName() == "shard_store_errors_total" {
			series = len(f.GetMetric())
		}
	}
	if series != 3 {
		t.Fatalf("before any error: %d series of shard_store_errors_total, want one per op at 0", series)
	}
	if _, err := st.Append(ctx, store.Append{Mid: "m1", From: "alice", To: "bob", Body: "hi"}); err != nil {
		t.Fatal(err)
	}
	if appends() != 1 || errs(storeOpAppend) != 0 {
		t.Fatalf("after one append: %d timed, %v errors; want 1 and 0", appends(), errs(storeOpAppend))
	}
	if _, err := st.Append(ctx, store.Append{Mid: "m2", From: "alice", To: "bob"}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("append without a body: %v, want ErrInvalid", err)
	}
	if appends() != 2 || errs(storeOpAppend) != 1 {
		t.Fatalf("after a failed append: %d timed, %v errors; want 2 and 1", appends(), errs(storeOpAppend))
	}

	gaveUp := meterStore(canceledStore{engine}, prometheus.NewRegistry()).(*meteredStore)
	if _, err := gaveUp.Append(ctx, store.Append{}); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if n := sample(t, gaveUp.errors.WithLabelValues(storeOpAppend)).GetCounter().GetValue(); n != 0 {
		t.Fatalf("an append its caller gave up on counted %v errors, want 0", n)
	}

	if err := engine.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := st.Read(ctx, store.Inbox("bob"), 0, 10); err == nil {
		t.Fatal("read from a closed store succeeded")
	}
	if err := st.RecordAnswers(ctx, []store.KeyedAnswer{{From: "alice", Key: "k1", Answer: store.Answer{Status: "delivered"}}}); err == nil {
		t.Fatal("record to a closed store succeeded")
	}
	if errs(storeOpRead) != 1 || errs(storeOpAnswer) != 1 {
		t.Fatalf("after a failed read and record: read %v, record_answer %v errors; want 1 each", errs(storeOpRead), errs(storeOpAnswer))
	}
}

func sample(t *testing.T, m prometheus.Metric) *dto.Metric {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	return &out
}

// canceledStore answers every append as if its caller had given up.
type canceledStore struct{ store.Store }

func (canceledStore) Append(context.Context, store.Append) (store.Appended, error) {
	return store.Appended{}, context.Canceled
}
