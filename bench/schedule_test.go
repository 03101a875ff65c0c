package main

import (
	"context"
	"testing"
	"time"
)

func TestScheduleCountAgreesWithDue(t *testing.T) {
	for _, rate := range []float64{1, 3, 1000, 2000, 7777.7, 50000} {
		s := schedule{rate: rate}
		for _, d := range []time.Duration{0, 1, time.Microsecond, 333 * time.Microsecond, time.Millisecond,
			time.Second, time.Second + 1, 10*time.Second - 1, 10 * time.Second} {
			var brute int64
			for s.due(brute) < d {
				brute++
			}
			if got := s.count(d); got != brute {
				t.Errorf("rate %v: count(%v) = %d, want %d messages due before it", rate, d, got, brute)
			}
		}
	}
	if got := (schedule{rate: 2000}).count(10 * time.Second); got != 20000 {
		t.Errorf("2000/s for 10 s schedules %d messages, want 20000", got)
	}
}

// stallClock is a fake clock: sleeps overshoot by oversleep, and every
// dispatch of a message in slow costs cost, as a blocked socket would.
type stallClock struct {
	now       time.Duration
	oversleep time.Duration
}

func (c *stallClock) since() time.Duration { return c.now }

func (c *stallClock) sleepUntil(_ context.Context, d time.Duration) {
	if d > c.now {
		c.now = d + c.oversleep
	}
}

func TestScheduleIsOpenLoop(t *testing.T) {
	s := schedule{rate: 1000} // one message per ms
	clk := &stallClock{oversleep: 3 * time.Millisecond}
	type sent struct {
		i        int64
		due, now time.Duration
	}
	var log []sent
	n := s.run(context.Background(), clk, 500, func(i int64, due, now time.Duration) {
		log = append(log, sent{i, due, now})
		if i == 100 {
			clk.now += 50 * time.Millisecond // a dispatch that blocks for 50 ms
		}
	})
	if n != 500 || len(log) != 500 {
		t.Fatalf("dispatched %d (%d logged), want all 500", n, len(log))
	}
	for k, x := range log {
		if x.i != int64(k) {
			t.Fatalf("dispatch %d was message %d: want every message once, in order", k, x.i)
		}
		if x.due != time.Duration(k)*time.Millisecond {
			t.Fatalf("message %d due at %v, want %v: a due time must not move when the sender is late", k, x.due, time.Duration(k)*time.Millisecond)
		}
		if x.now < x.due {
			t.Fatalf("message %d dispatched at %v, before its due time %v", k, x.now, x.due)
		}
	}
	// After the 50 ms stall the messages already due go out at once instead
	// of being spread out later (which would hide the stall from latency).
	burst := 0
	for _, x := range log[101:] {
		if x.now == log[101].now {
			burst++
		}
	}
	if burst < 50 {
		t.Errorf("%d messages caught up right after the stall, want the ~50 that fell due during it", burst)
	}
}

func TestScheduleStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	clk := &stallClock{}
	n := (schedule{rate: 100}).run(ctx, clk, 1000, func(i int64, _, _ time.Duration) {
		if i == 9 {
			cancel()
		}
	})
	if n != 10 {
		t.Errorf("dispatched %d after cancel at message 9, want 10", n)
	}
}
