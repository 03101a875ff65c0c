package main

import (
	"fmt"
	"time"
)

// figures are the four readings of one node that a leak raises, from its
// /metrics: process_resident_memory_bytes, go_goroutines,
// process_open_fds and go_memstats_heap_alloc_bytes.
type figures struct {
	RSS, Goroutines, FDs, Heap float64
}

func (f figures) min(o figures) figures {
	return figures{min(f.RSS, o.RSS), min(f.Goroutines, o.Goroutines), min(f.FDs, o.FDs), min(f.Heap, o.Heap)}
}

func (f figures) String() string {
	return fmt.Sprintf("rss %.1f MiB  goroutines %.0f  open files %.0f  heap %.1f MiB",
		f.RSS/(1<<20), f.Goroutines, f.FDs, f.Heap/(1<<20))
}

// slopeString prints a slope (or a bound) per 10 minutes.
func (f figures) slopeString() [4]string {
	return [4]string{mib(f.RSS), fmt.Sprintf("%+.0f", f.Goroutines), fmt.Sprintf("%+.0f", f.FDs), mib(f.Heap)}
}

func mib(b float64) string { return fmt.Sprintf("%+.1f MiB", b/(1<<20)) }

// trend is one node's figures over a soak, a point every soakPointEvery.
type trend struct {
	at  []time.Duration // since the soak started
	val []figures
}

func (t *trend) add(at time.Duration, f figures) {
	t.at = append(t.at, at)
	t.val = append(t.val, f)
}

// minPoints is the fewest points a slope is fitted to: 6 points are a
// minute at soakPointEvery.
const minPoints = 6

// slopes fits a least-squares line to each figure over the points after
// warmup and returns the slopes per 10 minutes and how long the points
// span; false with too few points.
func (t *trend) slopes(warmup time.Duration) (figures, time.Duration, bool) {
	var xs []float64
	var ys []figures
	for i, at := range t.at {
		if at >= warmup {
			xs = append(xs, at.Minutes()/10)
			ys = append(ys, t.val[i])
		}
	}
	if len(xs) < minPoints {
		return figures{}, 0, false
	}
	span := time.Duration((xs[len(xs)-1] - xs[0]) * float64(10*time.Minute))
	slope := func(pick func(figures) float64) float64 {
		var mx, my float64
		for i := range xs {
			mx += xs[i]
			my += pick(ys[i])
		}
		mx /= float64(len(xs))
		my /= float64(len(xs))
		var sxy, sxx float64
		for i := range xs {
			sxy += (xs[i] - mx) * (pick(ys[i]) - my)
			sxx += (xs[i] - mx) * (xs[i] - mx)
		}
		return sxy / sxx
	}
	return figures{
		RSS:        slope(func(f figures) float64 { return f.RSS }),
		Goroutines: slope(func(f figures) float64 { return f.Goroutines }),
		FDs:        slope(func(f figures) float64 { return f.FDs }),
		Heap:       slope(func(f figures) float64 { return f.Heap }),
	}, span, true
}

// soakWarmup is the start of a soak that is not judged: the runtime grows
// its heap and stacks to the load, and the first connections, rooms and
// directory entries are made. A quarter of the run, at most 5 minutes.
func soakWarmup(d time.Duration) time.Duration { return min(d/4, 5*time.Minute) }

// leakBound is the highest slope per 10 minutes, after the warm-up, that a
// node which ran throughout may show. A leak of one thing per event of the
// churn shows far above it: at 300 users a soak makes about 25,000
// sessions, 150,000 sends and 10 restarts of a peer per 10 minutes, so a
// goroutine or a file per session is +25,000, 1 KiB per send +146 MiB, and
// three goroutines or one file per restart of a peer +30 and +10. What
// noise showed in the README's 30-minute run is far below: under 1 MiB,
// 6 goroutines and 1 file.
var leakBound = figures{
	RSS:        16 << 20,
	Goroutines: 25,
	FDs:        8,
	Heap:       8 << 20,
}

// noiseFloor is what a rise over the judged span must pass to count: a
// few times what a figure wanders between 10 s points on a node under
// steady churn (the lowest of each window; measured on the project's
// 2-core machine, 60 users: the heap by 1 MiB, goroutines and files by
// 10), so that a short soak, whose slope is a minute or two of wander
// times ten, does not take noise for a leak. Over the 25 minutes a
// 30-minute soak judges, the bounds are the stricter; over the 90 s of
// `make test`'s 2-minute soak, the floor is (a leak it sees there is,
// for example, 45 KB of heap a second).
var noiseFloor = figures{
	RSS:        8 << 20,
	Goroutines: 20,
	FDs:        10,
	Heap:       4 << 20,
}

// leaks names each figure whose slope passes its bound and whose rise over
// span passes the noise floor.
func leaks(slope figures, span time.Duration) []string {
	rise := float64(span) / float64(10*time.Minute)
	var out []string
	check := func(name string, slope, bound, floor float64, show func(float64) string) {
		if slope > bound && slope*rise > floor {
			out = append(out, fmt.Sprintf("%s grow %s per 10 minutes (bound %s), %s over %s",
				name, show(slope), show(bound), show(slope*rise), span))
		}
	}
	count := func(v float64) string { return fmt.Sprintf("%+.0f", v) }
	check("RSS", slope.RSS, leakBound.RSS, noiseFloor.RSS, mib)
	check("goroutines", slope.Goroutines, leakBound.Goroutines, noiseFloor.Goroutines, count)
	check("open files", slope.FDs, leakBound.FDs, noiseFloor.FDs, count)
	check("heap", slope.Heap, leakBound.Heap, noiseFloor.Heap, mib)
	return out
}
