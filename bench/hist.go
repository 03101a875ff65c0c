package main

import (
	"fmt"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds.
const (
	// histMax is the largest latency recorded, 60 s: anything slower is a
	// message that effectively never came, and is clamped there.
	histMax = 60_000_000
	// histDigits: 3 significant digits, 0.1 % error, about 140 KB a
	// histogram; the per-second timeline uses 2 digits (1 %, 20 KB) since
	// it holds one histogram per second per shard.
	histDigits     = 3
	timelineDigits = 2
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, histMax, histDigits) }

func newTimelineHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, histMax, timelineDigits)
}

// record adds d, clamped to [1 µs, histMax], to h.
func record(h *hdrhistogram.Histogram, d time.Duration) {
	us := d.Microseconds()
	us = max(us, 1)
	us = min(us, histMax)
	_ = h.RecordValue(us) // cannot fail within [1, histMax]
}

// encodeHist is the compressed, base64 V2 encoding of h, for the JSON lines
// that worker processes send to the parent; "" for an empty histogram.
func encodeHist(h *hdrhistogram.Histogram) string {
	if h == nil || h.TotalCount() == 0 {
		return ""
	}
	b, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		panic(fmt.Sprintf("encode histogram: %v", err)) // in-memory zlib cannot fail
	}
	return string(b)
}

// mergeEncoded merges the encoded histogram s into dst.
func mergeEncoded(dst *hdrhistogram.Histogram, s string) error {
	if s == "" {
		return nil
	}
	h, err := hdrhistogram.Decode([]byte(s))
	if err != nil {
		return fmt.Errorf("decode histogram: %w", err)
	}
	if dropped := dst.Merge(h); dropped != 0 {
		return fmt.Errorf("merge histogram: %d values out of range", dropped)
	}
	return nil
}

// Latency summarizes a latency histogram, in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

func summarize(h *hdrhistogram.Histogram) Latency {
	if h == nil || h.TotalCount() == 0 {
		return Latency{}
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{
		Count: h.TotalCount(),
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
		Mean:  h.Mean() / 1000,
	}
}
