package main

import (
	"context"
	"math"
	"time"
)

// schedule is an open-loop timeline: message i is due at i/rate seconds
// after the start, whatever happened to the messages before it. A slow
// answer does not delay the next send, so the generator never slows down to
// the server's pace (the "coordinated omission" that makes closed-loop
// benchmarks flatter the server), and latency is measured from the due time,
// not from when the message actually left.
type schedule struct {
	rate float64 // messages per second, > 0
}

// due is the intended send time of message i, from the start.
func (s schedule) due(i int64) time.Duration {
	return time.Duration(float64(i) * 1e9 / s.rate)
}

// count is the number of messages due before d: those with due(i) < d.
func (s schedule) count(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	n := int64(math.Ceil(float64(d) * s.rate / 1e9))
	// Correct the float estimate against due itself, so that count and due
	// agree exactly at the edges.
	for n > 0 && s.due(n-1) >= d {
		n--
	}
	for s.due(n) < d {
		n++
	}
	return n
}

// clock is the time source of run: real for the bench, fake in tests.
type clock interface {
	// since is the time elapsed since the schedule's start.
	since() time.Duration
	// sleepUntil returns once since() >= d, or when ctx ends.
	sleepUntil(ctx context.Context, d time.Duration)
}

// run dispatches messages 0..total-1 in order, each once it is due. When the
// dispatcher falls behind (a long sleep, a blocked dispatch), it catches up
// by dispatching every message already due at once: a message's due time
// never moves. dispatch gets the message, its due time and the time it was
// actually dispatched. run returns the number dispatched, which is less than
// total only when ctx ended.
func (s schedule) run(ctx context.Context, clk clock, total int64, dispatch func(i int64, due, now time.Duration)) int64 {
	var next int64
	for next < total && ctx.Err() == nil {
		now := clk.since()
		for upto := min(s.count(now+1), total); next < upto; next++ {
			dispatch(next, s.due(next), now)
		}
		if next < total {
			clk.sleepUntil(ctx, s.due(next))
		}
	}
	return next
}

// realClock is the monotonic clock from start.
type realClock struct{ start time.Time }

func (c realClock) since() time.Duration { return time.Since(c.start) }

func (c realClock) sleepUntil(ctx context.Context, d time.Duration) {
	wait := d - c.since()
	if wait <= 0 {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
