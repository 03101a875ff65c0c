package storetest

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/shardchat/shard/store"
)

// BenchAppend measures the append path of an engine: one appender at a
// time (each append waits for its own commit), and many at once (as the
// connections of a busy node do), each with group commit (the default)
// and without it (MaxBatch 1). Every append is a direct message of 100
// bytes with an idempotency key, as the page and the Go client send
// them. It reports appends/s and the latency of one append (p50, p99).
// The answered runs also record each append's answer, as the router does
// for every keyed send (the latency is still the append's alone).
func BenchAppend(b *testing.B, fresh func(testing.TB) string) {
	for _, mode := range []struct {
		name     string
		batch    int
		answered bool
	}{{"batched", 0, false}, {"unbatched", 1, false}, {"batched+answers", 0, true}} {
		for _, par := range []int{1, 16, 64} {
			b.Run(mode.name+"/appenders="+strconv.Itoa(par), func(b *testing.B) {
				benchAppend(b, fresh(b), store.Options{MaxBatch: mode.batch, TrimInterval: -1}, par, mode.answered)
			})
		}
	}
}

var body = strings.Repeat("x", 100)

func benchAppend(b *testing.B, url string, opts store.Options, appenders int, answered bool) {
	ctx := context.Background()
	st, err := store.Open(ctx, url, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	var (
		next   atomic.Int64
		n      atomic.Int64
		mu     sync.Mutex
		merged = hdrhistogram.New(1, int64(10*time.Second/time.Microsecond), 2)
		wg     sync.WaitGroup
	)
	b.ReportAllocs()
	b.ResetTimer()
	for g := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := hdrhistogram.New(1, int64(10*time.Second/time.Microsecond), 2)
			from, to := "u"+strconv.Itoa(g), "u"+strconv.Itoa((g+1)%appenders)
			for n.Add(1) <= int64(b.N) {
				i := next.Add(1)
				a := store.Append{Mid: "m" + strconv.FormatInt(i, 36), From: from, To: to, Body: body, TS: time.Now().UnixMilli(), Key: "k" + strconv.FormatInt(i, 36)}
				start := time.Now()
				if _, err := st.Append(ctx, a); err != nil {
					b.Error(err)
					return
				}
				h.RecordValue(time.Since(start).Microseconds())
				if answered {
					if err := st.RecordAnswer(ctx, from, a.Key, store.Answer{Status: "delivered"}); err != nil {
						b.Error(err)
						return
					}
				}
			}
			mu.Lock()
			merged.Merge(h)
			mu.Unlock()
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
	b.ReportMetric(float64(merged.ValueAtQuantile(50)), "p50-µs")
	b.ReportMetric(float64(merged.ValueAtQuantile(99)), "p99-µs")
}

// BenchRead measures one Read of a page of 50 messages of 100 bytes from
// a room's stream, as a client catching up on history asks for them.
func BenchRead(b *testing.B, fresh func(testing.TB) string) {
	ctx := context.Background()
	st, err := store.Open(ctx, fresh(b), store.Options{TrimInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	for i := range 100 {
		a := store.Append{Mid: "m" + strconv.Itoa(i), From: "u0", Room: "lobby", Body: body, TS: time.Now().UnixMilli()}
		if _, err := st.Append(ctx, a); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		msgs, _, _, err := st.Read(ctx, store.RoomStream("lobby"), 50, 50)
		if err != nil || len(msgs) != 50 {
			b.Fatalf("read a page of 50 after 50 of 100: %d messages, %v", len(msgs), err)
		}
	}
}
