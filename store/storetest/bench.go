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
				st := openBench(b, fresh(b), store.Options{MaxBatch: mode.batch, TrimInterval: -1})
				users := names(par)
				benchAppend(b, st, par, mode.answered, func(g int, i int64) store.Append {
					return store.Append{Mid: "m" + strconv.FormatInt(i, 36), From: users[g], To: users[(g+1)%par], Body: body,
						TS: time.Now().UnixMilli(), Key: "k" + strconv.FormatInt(i, 36)}
				})
			})
		}
	}
}

var body = strings.Repeat("x", 100)

// names are n user ids, u0 to u(n-1), made before a benchmark's clock runs.
func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "u" + strconv.Itoa(i)
	}
	return out
}

// openBench opens a store that b closes at its end.
func openBench(b *testing.B, url string, opts store.Options) store.Store {
	st, err := store.Open(context.Background(), url, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

// benchAppend runs b.N appends of msg(appender, i) by appenders at once.
func benchAppend(b *testing.B, st store.Store, appenders int, answered bool, msg func(g int, i int64) store.Append) {
	ctx := context.Background()
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
			for n.Add(1) <= int64(b.N) {
				a := msg(g, next.Add(1))
				start := time.Now()
				if _, err := st.Append(ctx, a); err != nil {
					b.Error(err)
					return
				}
				h.RecordValue(time.Since(start).Microseconds())
				if answered {
					if err := st.RecordAnswers(ctx, []store.KeyedAnswer{{From: a.From, Key: a.Key, Answer: store.Answer{Status: "delivered"}}}); err != nil {
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

// groupSize is the benchmarks' group: the size of a team channel, and the
// 100-member group of issue 12's routing goal.
const groupSize = 100

// BenchGroupAppend measures a message to a group of groupSize members,
// each with a key, by one appender and by many at once (group commit):
// the membership check and the version come with each append.
func BenchGroupAppend(b *testing.B, fresh func(testing.TB) string) {
	for _, par := range []int{1, 16, 64} {
		b.Run("appenders="+strconv.Itoa(par), func(b *testing.B) {
			st := openBench(b, fresh(b), store.Options{TrimInterval: -1})
			members := names(groupSize)
			c := store.GroupChange{Group: "team", By: members[0], Members: members[1:], Mid: "created", TS: time.Now().UnixMilli()}
			if _, err := st.CreateGroup(context.Background(), c); err != nil {
				b.Fatal(err)
			}
			benchAppend(b, st, par, false, func(g int, i int64) store.Append {
				return store.Append{Mid: "m" + strconv.FormatInt(i, 36), From: members[g%groupSize], Group: "team",
					Body: body, TS: time.Now().UnixMilli(), Key: "k" + strconv.FormatInt(i, 36)}
			})
		})
	}
}

// BenchConversations measures one user's conversation list of 100
// conversations, 80 direct and 20 groups, each with a few messages and
// some read, as a client asks for it at every sign-in.
func BenchConversations(b *testing.B, fresh func(testing.TB) string) {
	ctx := context.Background()
	st := openBench(b, fresh(b), store.Options{TrimInterval: -1})
	const direct, groups = 80, 20
	var wg sync.WaitGroup
	errs := make(chan error, direct+groups)
	for i := range direct + groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- conversationFor(ctx, st, i, i >= direct)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		list, err := st.Conversations(ctx, "alice")
		if err != nil || len(list) != direct+groups {
			b.Fatalf("alice's conversations: %d, %v; want %d", len(list), err, direct+groups)
		}
	}
}

// conversationFor gives alice her i-th conversation: three messages from
// a peer (in a group of its own if group) and, for every other one, her
// answer.
func conversationFor(ctx context.Context, st store.Store, i int, group bool) error {
	peer := "p" + strconv.Itoa(i)
	a := store.Append{From: peer, To: "alice", Body: body}
	if group {
		a.To, a.Group = "", "g"+strconv.Itoa(i)
		c := store.GroupChange{Group: a.Group, By: peer, Members: []string{"alice"}, Mid: "c" + strconv.Itoa(i), TS: time.Now().UnixMilli()}
		if _, err := st.CreateGroup(ctx, c); err != nil {
			return err
		}
	}
	for k := range 3 {
		a.Mid, a.TS = peer+"-"+strconv.Itoa(k), time.Now().UnixMilli()
		if _, err := st.Append(ctx, a); err != nil {
			return err
		}
	}
	if i%2 == 0 {
		return nil
	}
	answer := store.Append{Mid: peer + "-answer", From: "alice", To: peer, Body: body, TS: time.Now().UnixMilli()}
	if group {
		answer.To, answer.Group = "", a.Group
	}
	_, err := st.Append(ctx, answer)
	return err
}
