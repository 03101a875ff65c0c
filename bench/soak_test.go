package main

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSoakOfTwoMinutesShowsNoLeak is the short soak of `make test`: a
// 3-node cluster under connects, disconnects, joins and sends for 2
// minutes, its last node drained and restarted every 30 s. It fails on a
// leak the soak can see in that time (soaktrend.go: a slope past its bound
// and a rise past the noise), and when the restarts or the traffic did not
// happen.
func TestSoakOfTwoMinutesShowsNoLeak(t *testing.T) {
	if testing.Short() {
		t.Skip("a 2-minute soak of a process cluster")
	}
	cfg, err := parseFlags([]string{"--soak", "2m", "--soak-restart", "30s", "--nodes", "3",
		"--users", "60", "--rate", "150", "--rooms", "5", "--progress", "none"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// Built here, outside the soak's 2 minutes.
	if cfg.ShardBin, err = buildShard(context.Background(), t.TempDir()); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := runSoak(context.Background(), cfg, &stdout, &stderr)
	t.Logf("soak output:\n%s%s", stdout.String(), stderr.String())
	if code != 0 {
		t.Fatalf("the soak exited %d: %s", code, strings.TrimSpace(stderr.String()))
	}
	m := regexp.MustCompile(`(\d+) restarts of n3, (\d+) sends, (\d+) messages received`).FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatal("the soak printed no summary")
	}
	restarts, _ := strconv.Atoi(m[1])
	received, _ := strconv.Atoi(m[3])
	if restarts < 2 || received < 1000 {
		t.Fatalf("%d restarts and %d messages received in 2 minutes: the soak did not churn as it should", restarts, received)
	}
}

// TestSoakJudgeTellsALeakFromNoise feeds the judge 25 minutes of points:
// a level that wanders is no leak, one goroutine and 40 KiB of heap more per
// second are.
func TestSoakJudgeTellsALeakFromNoise(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var flat, leaking trend
	for at := soakPointEvery; at <= 30*time.Minute; at += soakPointEvery {
		wander := figures{RSS: 40<<20 + rng.Float64()*(4<<20), Goroutines: 50 + rng.Float64()*10,
			FDs: 30 + rng.Float64()*10, Heap: 6<<20 + rng.Float64()*(1<<20)}
		flat.add(at, wander)
		wander.Goroutines += at.Seconds()
		wander.Heap += at.Seconds() * (40 << 10)
		leaking.add(at, wander)
	}
	warmup := soakWarmup(30 * time.Minute)
	sl, span, ok := flat.slopes(warmup)
	if !ok {
		t.Fatal("no slopes of 25 minutes of points")
	}
	if got := leaks(sl, span); len(got) > 0 {
		t.Fatalf("a level that only wanders judged a leak: %v", got)
	}
	sl, span, _ = leaking.slopes(warmup)
	got := strings.Join(leaks(sl, span), "; ")
	if !strings.Contains(got, "goroutines grow") || !strings.Contains(got, "heap grow") || strings.Contains(got, "open files") {
		t.Fatalf("one goroutine and 40 KiB of heap a second judged %q, want goroutines and heap", got)
	}
}

// TestShortSoakTakesNoNoiseForALeak: over the 90 s a 2-minute soak judges,
// a heap that wanders by 1 MiB and creeps up by 2.6 MiB has a slope past
// the bound, but no rise past the noise floor.
func TestShortSoakTakesNoNoiseForALeak(t *testing.T) {
	var tr trend
	for i, at := 0, 30*time.Second; at <= 2*time.Minute; i, at = i+1, at+soakPointEvery {
		tr.add(at, figures{RSS: 40 << 20, Goroutines: 50, FDs: 30, Heap: float64(5<<20 + (i%2)*(1<<20) + i*(300<<10))})
	}
	sl, span, ok := tr.slopes(soakWarmup(2 * time.Minute))
	if !ok {
		t.Fatal("no slopes of 90 s of points")
	}
	if sl.Heap <= leakBound.Heap {
		t.Fatalf("heap slope %s: the case does not test the floor", mib(sl.Heap))
	}
	if got := leaks(sl, span); len(got) > 0 {
		t.Fatalf("noise judged a leak: %v", got)
	}
}
