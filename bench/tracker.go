package main

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/protocol"
)

// connTable knows, for every local connection, whether it is up and how many
// times it has gone down. A recipient whose count is unchanged between a
// message's send and the end of the run was connected for the whole window,
// so a message it never got is lost, not missed.
type connTable struct {
	v []atomic.Uint64 // epoch<<1 | up
}

func newConnTable(n int) *connTable { return &connTable{v: make([]atomic.Uint64, n)} }

// connected marks c up (after its welcome, and after each reconnect once its
// rooms are joined again).
func (t *connTable) connected(c int32) {
	for {
		old := t.v[c].Load()
		if t.v[c].CompareAndSwap(old, old|1) {
			return
		}
	}
}

// disconnected marks c down and starts its next epoch.
func (t *connTable) disconnected(c int32) {
	for {
		old := t.v[c].Load()
		if t.v[c].CompareAndSwap(old, (old>>1+1)<<1) {
			return
		}
	}
}

// state returns c's epoch and whether it is up.
func (t *connTable) state(c int32) (epoch uint32, up bool) {
	v := t.v[c].Load()
	return uint32(v >> 1), v&1 == 1
}

// Answers to a send, as far as loss accounting cares.
const (
	answerNone    uint8 = iota // no answer (yet)
	answerOK                   // delivered or sent
	answerOffline              // the server said the recipient has no connection
	answerRefused              // an error frame: the server did not route it
	answerClosed               // the sender's connection ended before the answer
	answerNotSent              // the sender was reconnecting: nothing went out
)

// recip is one expected delivery: a connection that was up, in epoch, when
// the message was sent.
type recip struct {
	conn  int32
	epoch uint32
	got   bool
}

type msgRec struct {
	intended time.Duration // due time, from the phase's base
	sent     time.Duration // when the sender took it, from the phase's base: intended plus the send lag
	answer   uint8
	recips   []recip
}

// lockShards spreads the records over this many mutexes: deliveries arrive
// on one goroutine per connection, and one lock would serialize them.
const lockShards = 64

// histShards: latency recorders, chosen by receiving connection.
const histShards = 8

type histShard struct {
	mu      sync.Mutex
	total   *hdrhistogram.Histogram   // measured window, send to delivery
	sent    *hdrhistogram.Histogram   // the same, from when the sender took it rather than from its due time
	ack     *hdrhistogram.Histogram   // measured window, send to answer
	perSec  []*hdrhistogram.Histogram // by second of due time, warm-up included
	recent  *hdrhistogram.Histogram   // since the last progress report
	perSecN []int64                   // deliveries by second of due time
}

// phase is the accounting of one run: every message of the schedule, who
// should get it, who did, and how long it took.
type phase struct {
	id     uint32
	base   time.Time // schedule start; due times are offsets from it
	warmup time.Duration
	window time.Duration // measured: due in [warmup, warmup+window)
	conns  *connTable

	locks [lockShards]sync.Mutex
	recs  []msgRec

	outstanding atomic.Int64 // expected deliveries not yet received
	unanswered  atomic.Int64 // sends without an answer yet
	// progress counters, all messages (warm-up included)
	nSent, nAnswered, nDelivered, nRefused atomic.Int64

	hists [histShards]histShard

	mu     sync.Mutex // guards the maps below
	acks   map[string]int64
	errs   map[string]int64
	closed int64 // measured sends answered by ErrClosed
	// deliveries that match no expectation: a recipient that was not up
	// when the message was sent, or a bug (counted separately as duplicates
	// when the recipient had already got it)
	unexpected, duplicates atomic.Int64
	// deliveries that came after a later message from the same sender
	reordered atomic.Int64
}

func newPhase(id uint32, base time.Time, warmup, window time.Duration, total int64, conns *connTable) *phase {
	p := &phase{
		id: id, base: base, warmup: warmup, window: window, conns: conns,
		recs: make([]msgRec, total),
		acks: map[string]int64{}, errs: map[string]int64{},
	}
	secs := int((warmup+window+time.Second-1)/time.Second) + 1
	for i := range p.hists {
		h := &p.hists[i]
		h.total, h.sent, h.ack, h.recent = newHist(), newHist(), newHist(), newHist()
		h.perSec = make([]*hdrhistogram.Histogram, secs)
		h.perSecN = make([]int64, secs)
	}
	return p
}

func (p *phase) measured(intended time.Duration) bool {
	return intended >= p.warmup && intended < p.warmup+p.window
}

// expect records that message seq, due at intended, goes to recipients;
// those not up right now are not expected. It must come before the send.
func (p *phase) expect(seq int64, intended time.Duration, recipients []int32) {
	rs := make([]recip, 0, len(recipients))
	for _, c := range recipients {
		if epoch, up := p.conns.state(c); up {
			rs = append(rs, recip{conn: c, epoch: epoch})
		}
	}
	l := &p.locks[seq%lockShards]
	l.Lock()
	p.recs[seq] = msgRec{intended: intended, sent: time.Since(p.base), recips: rs}
	l.Unlock()
	p.outstanding.Add(int64(len(rs)))
	p.unanswered.Add(1)
}

// notSent records that message seq did not go out: its sender was between
// connections.
func (p *phase) notSent(seq int64) {
	p.settle(seq, answerNotSent)
	p.unanswered.Add(-1)
}

// answered records the server's answer to message seq.
func (p *phase) answered(seq int64, a client.Ack, err error) {
	now := time.Since(p.base)
	var e *client.Error
	kind := answerOK
	switch {
	case err == nil && a.Status == protocol.StatusOffline:
		kind = answerOffline
	case errors.As(err, &e):
		kind = answerRefused
	case err != nil:
		kind = answerClosed
	}
	intended := p.settle(seq, kind)
	p.unanswered.Add(-1)
	p.nAnswered.Add(1)
	if kind == answerRefused {
		p.nRefused.Add(1)
	}
	if !p.measured(intended) {
		return
	}
	p.mu.Lock()
	switch kind {
	case answerRefused:
		p.errs[e.Code]++
	case answerClosed:
		p.closed++
	default:
		p.acks[a.Status]++
	}
	p.mu.Unlock()
	if kind == answerOK || kind == answerOffline {
		h := &p.hists[seq%histShards]
		h.mu.Lock()
		record(h.ack, now-intended)
		h.mu.Unlock()
	}
}

// settle sets the answer of seq and returns its due time. Deliveries that a
// refused or unsent message still expects will never come: they stop being
// outstanding, so the grace period does not wait for them.
func (p *phase) settle(seq int64, kind uint8) time.Duration {
	l := &p.locks[seq%lockShards]
	l.Lock()
	r := &p.recs[seq]
	r.answer = kind
	var gone int64
	if kind == answerRefused || kind == answerNotSent {
		for _, x := range r.recips {
			if !x.got {
				gone++
			}
		}
	}
	intended := r.intended
	l.Unlock()
	p.outstanding.Add(-gone)
	return intended
}

// received accounts for message seq arriving on connection c at time at.
func (p *phase) received(c int32, seq int64, at time.Time) {
	if seq < 0 || seq >= int64(len(p.recs)) {
		p.unexpected.Add(1)
		return
	}
	l := &p.locks[seq%lockShards]
	l.Lock()
	r := &p.recs[seq]
	intended, sent, found, dup := r.intended, r.sent, false, false
	for i := range r.recips {
		if r.recips[i].conn == c {
			found, dup = true, r.recips[i].got
			r.recips[i].got = true
			break
		}
	}
	notAnswered := r.answer == answerRefused || r.answer == answerNotSent
	l.Unlock()
	switch {
	case !found:
		p.unexpected.Add(1)
		return
	case dup:
		p.duplicates.Add(1)
		return
	}
	if !notAnswered { // settle has already stopped counting those
		p.outstanding.Add(-1)
	}
	p.nDelivered.Add(1)
	lat := at.Sub(p.base) - intended
	h := &p.hists[c%histShards]
	sec := int(intended / time.Second)
	h.mu.Lock()
	if p.measured(intended) {
		record(h.total, lat)
		record(h.sent, at.Sub(p.base)-sent)
	}
	record(h.recent, lat)
	if sec < len(h.perSec) {
		if h.perSec[sec] == nil {
			h.perSec[sec] = newTimelineHist()
		}
		record(h.perSec[sec], lat)
		h.perSecN[sec]++
	}
	h.mu.Unlock()
}

// recentP99 returns the p99 of deliveries since the last call, and resets it.
func (p *phase) recentP99() time.Duration {
	all := newHist()
	for i := range p.hists {
		h := &p.hists[i]
		h.mu.Lock()
		all.Merge(h.recent)
		h.recent.Reset()
		h.mu.Unlock()
	}
	return time.Duration(all.ValueAtQuantile(99)) * time.Microsecond
}

// settled reports whether every answer and every expected delivery is in.
func (p *phase) settled() bool { return p.outstanding.Load() <= 0 && p.unanswered.Load() <= 0 }

// Counts is the accounting of the measured window's messages.
type Counts struct {
	// Offered: messages the schedule had due in the window.
	Offered int64 `json:"offered"`
	// Sent: went out on a connection. NotSent: the sender was reconnecting.
	Sent    int64 `json:"sent"`
	NotSent int64 `json:"not_sent"`
	// Acks by status, Errors by code; Closed: the sender's connection ended
	// before the answer; Unanswered: no answer by the end of the grace.
	Acks       map[string]int64 `json:"acks"`
	Errors     map[string]int64 `json:"errors"`
	Closed     int64            `json:"closed"`
	Unanswered int64            `json:"unanswered"`
	// Expected: deliveries owed to recipients that were up at send time.
	// Delivered: of those, received. Lost: not received although the
	// recipient stayed connected throughout and the server accepted the
	// message (a message later than the grace period counts as lost: the
	// grace bounds how long a recipient is owed one). Excluded: not received,
	// but the recipient dropped meanwhile or the send was not accepted.
	Expected  int64 `json:"expected"`
	Delivered int64 `json:"delivered"`
	Lost      int64 `json:"lost"`
	Excluded  int64 `json:"excluded"`
	// Excluded, by why: the recipient dropped (and maybe came back) before
	// the end; or the send was not accepted (refused, not sent, closed,
	// unanswered).
	ExcludedDropped    int64 `json:"excluded_dropped"`
	ExcludedUnaccepted int64 `json:"excluded_unaccepted"`
	// LostMessages: messages with at least one lost delivery.
	LostMessages int64 `json:"lost_messages"`
	// Duplicates: a recipient got the same message twice. Unexpected: a
	// delivery to a connection that was not expected (it was down at send
	// time), or a message of another phase. Both counted over the whole run.
	Duplicates int64 `json:"duplicates"`
	Unexpected int64 `json:"unexpected"`
	// Reordered: a delivery that came after a later message from the same
	// sending connection (docs/protocol.md §6.5 promises their order), over the
	// whole run. A sender that reconnected in between is a new connection, for
	// which the promise does not hold.
	Reordered int64 `json:"reordered"`
}

// Answered is the number of measured sends that got an ack or an error.
func (c *Counts) Answered() int64 {
	var n int64
	for _, v := range c.Acks {
		n += v
	}
	for _, v := range c.Errors {
		n += v
	}
	return n
}

func (c *Counts) add(o Counts) {
	c.Offered += o.Offered
	c.Sent += o.Sent
	c.NotSent += o.NotSent
	c.Acks = addMap(c.Acks, o.Acks)
	c.Errors = addMap(c.Errors, o.Errors)
	c.Closed += o.Closed
	c.Unanswered += o.Unanswered
	c.Expected += o.Expected
	c.Delivered += o.Delivered
	c.Lost += o.Lost
	c.Excluded += o.Excluded
	c.ExcludedDropped += o.ExcludedDropped
	c.ExcludedUnaccepted += o.ExcludedUnaccepted
	c.LostMessages += o.LostMessages
	c.Duplicates += o.Duplicates
	c.Unexpected += o.Unexpected
	c.Reordered += o.Reordered
}

func addMap(dst, src map[string]int64) map[string]int64 {
	if dst == nil {
		dst = map[string]int64{}
	}
	for k, v := range src {
		dst[k] += v
	}
	return dst
}

// finish classifies every measured message once the grace period is over.
// dispatched is how many messages of the schedule were dispatched.
func (p *phase) finish(dispatched int64) Counts {
	c := Counts{}
	p.mu.Lock()
	c.Acks, c.Errors, c.Closed = copyMap(p.acks), copyMap(p.errs), p.closed
	p.mu.Unlock()
	for seq := int64(0); seq < dispatched; seq++ {
		l := &p.locks[seq%lockShards]
		l.Lock() // a late delivery may still be marking its recipient
		p.classify(&p.recs[seq], &c)
		l.Unlock()
	}
	c.Duplicates = p.duplicates.Load()
	c.Unexpected = p.unexpected.Load()
	c.Reordered = p.reordered.Load()
	return c
}

// classify adds measured message r to c. The caller holds r's lock.
func (p *phase) classify(r *msgRec, c *Counts) {
	if !p.measured(r.intended) {
		return
	}
	c.Offered++
	switch r.answer {
	case answerNotSent:
		c.NotSent++
	case answerNone:
		c.Sent++
		c.Unanswered++
	default:
		c.Sent++
	}
	accepted := r.answer == answerOK || r.answer == answerOffline
	lost := false
	for _, x := range r.recips {
		c.Expected++
		epoch, up := p.conns.state(x.conn)
		switch {
		case x.got:
			c.Delivered++
		case !accepted:
			c.Excluded++
			c.ExcludedUnaccepted++
		case up && epoch == x.epoch:
			c.Lost++
			lost = true
		default:
			c.Excluded++
			c.ExcludedDropped++
		}
	}
	if lost {
		c.LostMessages++
	}
}

func copyMap(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// TimelinePoint is one second of a run, by due time of the messages.
type TimelinePoint struct {
	Second    int     `json:"second"` // from the start of the warm-up
	Delivered int64   `json:"delivered"`
	P50       float64 `json:"p50_ms"`
	P99       float64 `json:"p99_ms"`
	Max       float64 `json:"max_ms"`
	Hist      string  `json:"hist,omitempty"` // encoded, for merging; dropped from the report
}

// histograms merges the shards: the window's delivery and ack latencies,
// and the timeline.
func (p *phase) histograms() (total, sent, ack *hdrhistogram.Histogram, timeline []TimelinePoint) {
	total, sent, ack = newHist(), newHist(), newHist()
	secs := len(p.hists[0].perSec)
	perSec := make([]*hdrhistogram.Histogram, secs)
	counts := make([]int64, secs)
	for i := range p.hists {
		h := &p.hists[i]
		h.mu.Lock()
		total.Merge(h.total)
		sent.Merge(h.sent)
		ack.Merge(h.ack)
		for s, x := range h.perSec {
			if x == nil {
				continue
			}
			if perSec[s] == nil {
				perSec[s] = newTimelineHist()
			}
			perSec[s].Merge(x)
			counts[s] += h.perSecN[s]
		}
		h.mu.Unlock()
	}
	for s := range secs {
		if perSec[s] == nil {
			continue
		}
		timeline = append(timeline, TimelinePoint{Second: s, Delivered: counts[s], Hist: encodeHist(perSec[s])})
	}
	return total, sent, ack, timeline
}
