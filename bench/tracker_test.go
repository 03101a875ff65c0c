package main

import (
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/protocol"
)

// newTestPhase is a phase with n connections all up, a window of 10 s and
// no warm-up unless given, room for total messages.
func newTestPhase(n int, warmup time.Duration, total int64) (*phase, *connTable) {
	t := newConnTable(n)
	for c := range n {
		t.connected(int32(c))
	}
	return newPhase(1, time.Now(), warmup, 10*time.Second, total, t), t
}

func TestLossCountsOnlyRecipientsConnectedThroughout(t *testing.T) {
	p, conns := newTestPhase(5, 0, 7)
	conns.disconnected(0) // connection 0 is down from the start
	at := func(d time.Duration) time.Time { return p.base.Add(d) }
	ok := client.Ack{Status: protocol.StatusDelivered}

	// 0: to 1 and 2; 1 gets it, 2 stays connected and never does: lost.
	p.expect(0, 0, []int32{1, 2})
	p.answered(0, ok, nil)
	p.received(1, 0, at(time.Millisecond))
	// 1: to 3, which drops and comes back before the end: not counted lost.
	p.expect(1, 10*time.Millisecond, []int32{3})
	p.answered(1, ok, nil)
	conns.disconnected(3)
	conns.connected(3)
	// 2: refused by the server: the sender was told, nothing is owed.
	p.expect(2, 20*time.Millisecond, []int32{1})
	p.answered(2, client.Ack{}, &client.Error{Code: protocol.CodeRateLimited})
	// 3: the sender was reconnecting, so it never went out.
	p.expect(3, 30*time.Millisecond, []int32{2})
	p.notSent(3)
	// 4: arrives twice: one delivery and one duplicate.
	p.expect(4, 40*time.Millisecond, []int32{1})
	p.answered(4, ok, nil)
	p.received(1, 4, at(45*time.Millisecond))
	p.received(1, 4, at(46*time.Millisecond))
	// 5: to 0, which is down: not expected; its arrival anyway is unexpected.
	p.expect(5, 50*time.Millisecond, []int32{0, 4})
	p.answered(5, client.Ack{Status: protocol.StatusSent, Recipients: 2}, nil)
	p.received(4, 5, at(52*time.Millisecond))
	p.received(0, 5, at(53*time.Millisecond))
	// 6: the sender's connection ended before the answer: not lost either.
	p.expect(6, 60*time.Millisecond, []int32{2})
	p.answered(6, client.Ack{}, client.ErrClosed)

	got := p.finish(7)
	want := Counts{
		Offered: 7, Sent: 6, NotSent: 1,
		Acks:   map[string]int64{protocol.StatusDelivered: 3, protocol.StatusSent: 1},
		Errors: map[string]int64{protocol.CodeRateLimited: 1},
		Closed: 1,
		// expected: 2 + 1 + 1 + 1 + 1 + 1 (message 5 expects only 4) + 1
		Expected: 8, Delivered: 3, Lost: 1, LostMessages: 1,
		Excluded: 4, ExcludedDropped: 1, ExcludedUnaccepted: 3,
		Duplicates: 1, Unexpected: 1,
	}
	if !equalCounts(got, want) {
		t.Errorf("counts:\n got %+v\nwant %+v", got, want)
	}
	if got.Answered() != 5 {
		t.Errorf("Answered() = %d, want 5 (4 acks, 1 error)", got.Answered())
	}
}

func equalCounts(a, b Counts) bool { return reflect.DeepEqual(a, b) }

func TestWarmupMessagesAreDeliveredButNotCounted(t *testing.T) {
	p, _ := newTestPhase(2, time.Second, 2)
	p.expect(0, 500*time.Millisecond, []int32{1}) // warm-up
	p.expect(1, 1500*time.Millisecond, []int32{1})
	p.answered(0, client.Ack{Status: protocol.StatusDelivered}, nil)
	p.answered(1, client.Ack{Status: protocol.StatusDelivered}, nil)
	p.received(1, 0, p.base.Add(501*time.Millisecond))
	p.received(1, 1, p.base.Add(1502*time.Millisecond))
	c := p.finish(2)
	if c.Offered != 1 || c.Delivered != 1 || c.Acks[protocol.StatusDelivered] != 1 {
		t.Errorf("window counts %+v: want only the message due after the warm-up", c)
	}
	total, _, _, timeline := p.histograms()
	if total.TotalCount() != 1 {
		t.Errorf("window latency has %d samples, want 1", total.TotalCount())
	}
	if got := total.Max(); got < 1900 || got > 2100 {
		t.Errorf("latency %d µs, want about 2000 (from the due time)", got)
	}
	if len(timeline) != 2 || timeline[0].Second != 0 || timeline[1].Second != 1 {
		t.Errorf("timeline %+v: want seconds 0 (warm-up) and 1", timeline)
	}
}

func TestSettledWaitsOnlyForWhatCanStillArrive(t *testing.T) {
	p, _ := newTestPhase(3, 0, 2)
	p.expect(0, 0, []int32{1, 2})
	p.expect(1, 0, []int32{1})
	if p.settled() {
		t.Fatal("settled with two sends unanswered")
	}
	p.answered(0, client.Ack{Status: protocol.StatusSent, Recipients: 2}, nil)
	p.answered(1, client.Ack{}, &client.Error{Code: protocol.CodeUnavailable})
	p.received(1, 0, p.base)
	if p.settled() {
		t.Fatal("settled while connection 2 still owes a delivery")
	}
	p.received(2, 0, p.base)
	if !p.settled() {
		t.Fatalf("not settled: outstanding %d, unanswered %d; a refused send owes nothing",
			p.outstanding.Load(), p.unanswered.Load())
	}
}

func TestConcurrentDeliveriesAreEachCountedOnce(t *testing.T) {
	const conns, msgs = 8, 2000
	p, _ := newTestPhase(conns, 0, msgs)
	all := make([]int32, conns)
	for i := range all {
		all[i] = int32(i)
	}
	for s := int64(0); s < msgs; s++ {
		p.expect(s, time.Duration(s)*time.Millisecond, all)
	}
	var wg sync.WaitGroup
	for c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := int64(0); s < msgs; s++ {
				p.received(int32(c), s, p.base.Add(time.Duration(s+1)*time.Millisecond))
				if s%7 == 0 {
					p.received(int32(c), s, p.base) // a duplicate
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for s := int64(0); s < msgs; s++ {
			p.answered(s, client.Ack{Status: protocol.StatusSent, Recipients: conns}, nil)
		}
	}()
	wg.Wait()
	c := p.finish(msgs)
	if c.Delivered != conns*msgs || c.Lost != 0 || c.Duplicates != conns*((msgs+6)/7) {
		t.Errorf("delivered %d (want %d), lost %d, duplicates %d (want %d)",
			c.Delivered, conns*msgs, c.Lost, c.Duplicates, conns*((msgs+6)/7))
	}
	if !p.settled() {
		t.Error("not settled after every delivery and answer")
	}
}

func TestOrderCheckFlagsALaterMessageFromTheSameSender(t *testing.T) {
	var o orderCheck
	for _, x := range []struct {
		from int32
		seq  int64
		ok   bool
	}{
		{1, 10, true}, {2, 5, true}, // senders are independent
		{1, 12, true}, {1, 11, false}, // 11 came after 12, both from 1
		{2, 6, true}, {1, 13, true},
	} {
		if got := o.see(1, x.from, x.seq); got != x.ok {
			t.Errorf("message %d from %d: in order = %v, want %v", x.seq, x.from, got, x.ok)
		}
	}
	if !o.see(2, 1, 0) {
		t.Error("a new run starts its numbers afresh, but message 0 of run 2 was flagged")
	}
}

// The latency from sent leaves out the generator's send lag: a message due
// at 50 ms that the sender took at 100 ms and that came at 120 ms took 70 ms
// from its due time and at most 20 ms from when it was sent.
func TestLatencyFromSentLeavesOutTheSendLag(t *testing.T) {
	tab := newConnTable(2)
	tab.connected(1)
	p := newPhase(1, time.Now().Add(-100*time.Millisecond), 0, 10*time.Second, 1, tab)
	p.expect(0, 50*time.Millisecond, []int32{1}) // taken now: about 100 ms after the base
	p.received(1, 0, p.base.Add(120*time.Millisecond))
	total, sent, _, _ := p.histograms()
	if got := total.Max(); got < 69000 || got > 71000 {
		t.Errorf("latency from the due time %d µs, want about 70,000", got)
	}
	if sent.TotalCount() != 1 || sent.Max() > 20000 {
		t.Errorf("latency from sent: %d samples, max %d µs; want one, at most 20,000", sent.TotalCount(), sent.Max())
	}
}
