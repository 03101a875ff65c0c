package main

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

func TestMergedWorkerHistogramsEqualOneHistogram(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	whole := newHist()
	parts := []*workerResult{{}, {}, {}}
	hs := []*hdrhistogram.Histogram{newHist(), newHist(), newHist()}
	for i := 0; i < 30000; i++ {
		// Mostly sub-millisecond, with a long tail up to seconds.
		d := time.Duration(rng.ExpFloat64()*400) * time.Microsecond
		if i%1000 == 0 {
			d = time.Duration(rng.IntN(3000)) * time.Millisecond
		}
		record(whole, d)
		record(hs[i%3], d)
	}
	for i, p := range parts {
		p.Latency = encodeHist(hs[i])
		p.Counts.Delivered = hs[i].TotalCount()
	}
	r, err := buildRun(&Config{Duration: 10 * time.Second}, 1, 1000, parts)
	if err != nil {
		t.Fatal(err)
	}
	want := summarize(whole)
	if r.Latency != want {
		t.Errorf("merged latency %+v, want %+v as if recorded in one histogram", r.Latency, want)
	}
	if r.Latency.Count != 30000 || r.DeliveredRate != 3000 {
		t.Errorf("count %d, delivered %.0f/s; want 30000 and 3000/s", r.Latency.Count, r.DeliveredRate)
	}
}

func TestTimelinesMergeSecondBySecond(t *testing.T) {
	sec := func(s int, n int64, lat time.Duration) TimelinePoint {
		h := newTimelineHist()
		for range n {
			record(h, lat)
		}
		return TimelinePoint{Second: s, Delivered: n, Hist: encodeHist(h)}
	}
	a := &workerResult{Timeline: []TimelinePoint{sec(0, 10, time.Millisecond), sec(1, 10, time.Millisecond)}}
	b := &workerResult{Timeline: []TimelinePoint{sec(1, 10, 100*time.Millisecond), sec(2, 5, time.Millisecond)}}
	r, err := buildRun(&Config{Duration: time.Second}, 1, 10, []*workerResult{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Timeline) != 3 {
		t.Fatalf("timeline %+v: want seconds 0, 1, 2", r.Timeline)
	}
	s1 := r.Timeline[1]
	if s1.Second != 1 || s1.Delivered != 20 {
		t.Errorf("second 1: %+v, want 20 deliveries from both workers", s1)
	}
	// Half at 1 ms, half at 100 ms: the median is 1 ms, p99 is 100 ms
	// (within the timeline's 1 % precision).
	if s1.P50 < 0.99 || s1.P50 > 1.01 || s1.P99 < 99 || s1.P99 > 101 {
		t.Errorf("second 1: p50 %.2f ms, p99 %.2f ms; want 1 and 100", s1.P50, s1.P99)
	}
}

func TestEmptyHistogramsEncodeToNothing(t *testing.T) {
	if s := encodeHist(newHist()); s != "" {
		t.Errorf("empty histogram encodes to %q", s)
	}
	h := newHist()
	if err := mergeEncoded(h, ""); err != nil || h.TotalCount() != 0 {
		t.Errorf("merging nothing: %v, %d values", err, h.TotalCount())
	}
	if err := mergeEncoded(h, "not a histogram"); err == nil {
		t.Error("merging garbage succeeded")
	}
}
