package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// op is what a request asks of an engine's committer.
type op uint8

const (
	opAppend op = iota
	opAnswer
	opTrim
	opChange // embedded: a membership change, committed on its own
	opRead   // embedded: a read mark
	opSeen   // embedded: a last-seen time
)

// request is one unit of work for a committer, answered through done.
// keyID names an idempotency key.
type keyID struct{ from, key string }

type request struct {
	op     op
	append Append // opSeen: append.From names the user, append.TS the time
	answer Answer // opAnswer: append.From and append.Key name the key
	trim   trimCursor
	change *changeRequest
	mark   ReadMark

	res     Appended
	changed Changed    // opChange
	marked  ReadMarked // opRead
	removed int        // opTrim
	more    bool       // opTrim: the pass has more steps
	err     error
	done    chan struct{}
}

// committer is group commit: requests wait in a bounded queue, and each of
// n goroutines takes all that wait (up to maxBatch) and commits them in one
// transaction, so that one sync serves many appends. With maxBatch 1 every
// append is its own transaction.
type committer struct {
	queue    chan *request
	maxBatch int
	commit   func(batch []*request) // sets res or err on each request

	mu     sync.RWMutex // held for reading while sending to queue
	closed bool
	wg     sync.WaitGroup
}

func newCommitter(n, maxBatch int, commit func([]*request)) *committer {
	c := &committer{queue: make(chan *request, queueLen), maxBatch: maxBatch, commit: commit}
	c.wg.Add(n)
	for range n {
		go c.loop()
	}
	return c
}

func (c *committer) loop() {
	defer c.wg.Done()
	batch := make([]*request, 0, c.maxBatch)
	var answers []*request
	for r := range c.queue {
		batch = append(batch[:0], r)
	gather:
		for len(batch) < c.maxBatch {
			select {
			case r, ok := <-c.queue:
				if !ok {
					break gather
				}
				batch = append(batch, r)
			default:
				break gather
			}
		}
		// Answers wait for nobody: the appends taken with them are
		// committed, and answered, first. An engine's commit so gets one
		// kind or the other, never both.
		rest := batch[:0]
		answers = answers[:0]
		for _, r := range batch {
			if r.op == opAnswer {
				answers = append(answers, r)
			} else {
				rest = append(rest, r)
			}
		}
		c.commitAndAnswer(rest)
		c.commitAndAnswer(answers)
		clear(batch)
		clear(answers)
	}
}

// commitAndAnswer commits part, when it holds anything, and tells each of
// its requests' callers.
func (c *committer) commitAndAnswer(part []*request) {
	if len(part) == 0 {
		return
	}
	c.commit(part)
	for _, r := range part {
		close(r.done)
	}
}

// do queues rs, in order, and waits for their commits, or for ctx; the
// error is the first request's that has one. Queued together, they are
// taken together, as far as maxBatch allows.
func (c *committer) do(ctx context.Context, rs ...*request) error {
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return ErrClosed
	}
	for _, r := range rs {
		r.done = make(chan struct{})
		select {
		case c.queue <- r:
		case <-ctx.Done():
			c.mu.RUnlock()
			return ctx.Err()
		}
	}
	c.mu.RUnlock()
	var err error
	for _, r := range rs {
		select {
		case <-r.done:
			if err == nil {
				err = r.err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

// close refuses new requests, commits those queued and waits for the
// goroutines.
func (c *committer) close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.queue)
	}
	c.mu.Unlock()
	c.wg.Wait()
}

// background runs a function every interval until stopped: the store's
// work beside the committer (retention, the health probe).
type background struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// every starts fn every interval (never if interval < 0); fn's ctx ends
// when the background is stopped.
func every(interval time.Duration, fn func(ctx context.Context)) *background {
	ctx, cancel := context.WithCancel(context.Background())
	b := &background{cancel: cancel, done: make(chan struct{})}
	if interval < 0 {
		close(b.done)
		return b
	}
	go func() {
		defer close(b.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			fn(ctx)
		}
	}()
	return b
}

// stop stops the background and waits for a run under way.
func (b *background) stop() {
	b.cancel()
	<-b.done
}

// startTrimmer runs trim every interval: the background half of
// retention.
func startTrimmer(interval time.Duration, log *slog.Logger, trim func(context.Context) (int, error)) *background {
	return every(interval, func(ctx context.Context) {
		n, err := trim(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("store retention pass failed", "err", err)
		case n > 0:
			log.Debug("store retention pass", "removed", n)
		}
	})
}

// engine is what each engine puts behind the frontend.
type engine interface {
	// commit runs on a committer goroutine: it sets res or err on each
	// request of batch.
	commit(batch []*request)
	// read is Store.Read once the arguments are checked (after >= 0, limit
	// within 1..MaxReadLimit).
	read(ctx context.Context, s Stream, after int64, limit int) (msgs []Message, last int64, more bool, err error)
	// trimStep runs one bounded step of a retention pass from cur (the
	// zero cursor starts a pass): removed is what it removed, next where
	// the pass goes on if more.
	trimStep(ctx context.Context, cur trimCursor) (removed int, next trimCursor, more bool, err error)

	// The groups, read state and presence, once the arguments are
	// checked; each returns the Store method's result.
	change(ctx context.Context, r *changeRequest) (Changed, error)
	group(ctx context.Context, group string) (GroupInfo, error)
	userGroups(ctx context.Context, user string) ([]string, error)
	readGroup(ctx context.Context, user, group string, after int64, limit int) (msgs []Message, last int64, more bool, err error)
	setRead(ctx context.Context, r ReadMark) (ReadMarked, error)
	conversations(ctx context.Context, user string) ([]Conversation, error)
	setLastSeen(ctx context.Context, user string, ms int64) error
	lastSeen(ctx context.Context, users []string) (map[string]int64, error)

	// probe checks, cheaply, that the engine can take writes now: nil, or
	// an error that wraps ErrUnavailable. It runs every probeEvery, beside
	// the committer.
	probe(ctx context.Context) error

	// close closes the engine; nothing calls it after.
	close() error
}

// frontend is the Store both engines share: appends and answers wait in
// the committer, which gives the engine a group of them to commit at once;
// reads and retention steps go to the engine; a trimmer runs retention in
// the background; Close stops all of it in order.
type frontend struct {
	e      engine
	c      *committer
	trims  *background
	probes *background
	opts   Options
	// health is set by the engine's commits and by the prober.
	health *health

	// mu is held for reading by each read, retention step and call of the
	// groups, read state and presence, so that Close waits for those under
	// way before it closes the engine.
	mu     sync.RWMutex
	closed bool

	closeOnce sync.Once
	closeErr  error
}

// start starts the committer, with n goroutines, the trimmer and the
// prober of e.
func (f *frontend) start(e engine, n int, opts Options) {
	f.e, f.opts = e, opts
	f.health = newHealth(opts.Logger)
	f.c = newCommitter(n, opts.MaxBatch, e.commit)
	f.trims = startTrimmer(opts.TrimInterval, opts.Logger, f.Trim)
	f.probes = startProber(f.health, e.probe)
}

// Health says whether the store can take writes now.
func (f *frontend) Health() Health { return f.health.get() }

func (f *frontend) Append(ctx context.Context, a Append) (Appended, error) {
	if err := a.check(); err != nil {
		return Appended{}, err
	}
	r := &request{op: opAppend, append: a}
	if err := f.c.do(ctx, r); err != nil {
		return Appended{}, err
	}
	return r.res, nil
}

// RecordAnswers queues the answers a batch of the committer's size at a
// time, each once the one before is committed: a backlog of answers never
// holds the whole queue, so an append queued meanwhile waits for one batch
// of answers at most.
func (f *frontend) RecordAnswers(ctx context.Context, answers []KeyedAnswer) error {
	reqs := make([]*request, len(answers))
	for i, a := range answers {
		reqs[i] = &request{op: opAnswer, append: Append{From: a.From, Key: a.Key}, answer: a.Answer}
	}
	var first error
	for len(reqs) > 0 {
		n := min(len(reqs), f.c.maxBatch)
		if err := f.c.do(ctx, reqs[:n]...); err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrClosed) {
				return err
			}
			first = cmp.Or(first, err)
		}
		reqs = reqs[n:]
	}
	return first
}

func (f *frontend) Read(ctx context.Context, s Stream, after int64, limit int) ([]Message, int64, bool, error) {
	limit, err := checkRead(s, limit)
	if err != nil {
		return nil, 0, false, err
	}
	if err := f.acquire(); err != nil {
		return nil, 0, false, err
	}
	defer f.mu.RUnlock()
	msgs, last, more, err := f.e.read(ctx, s, max(after, 0), limit)
	if err != nil {
		return nil, 0, false, fmt.Errorf("read %s: %w", s, err)
	}
	return msgs, last, more, nil
}

// Trim runs the engine's retention steps until one ends the pass. Close
// waits for the step under way, not for the pass.
func (f *frontend) Trim(ctx context.Context) (int, error) {
	total := 0
	var cur trimCursor
	for {
		n, next, more, err := f.lockedTrimStep(ctx, cur)
		total += n
		if err != nil {
			return total, fmt.Errorf("store retention: %w", err)
		}
		if !more {
			return total, nil
		}
		cur = next
	}
}

// lockedTrimStep is the engine's trimStep, unless the store is closed.
func (f *frontend) lockedTrimStep(ctx context.Context, cur trimCursor) (int, trimCursor, bool, error) {
	if err := f.acquire(); err != nil {
		return 0, cur, false, err
	}
	defer f.mu.RUnlock()
	return f.e.trimStep(ctx, cur)
}

// acquire holds f.mu for reading, to be released with f.mu.RUnlock,
// unless the store is closed.
func (f *frontend) acquire() error {
	f.mu.RLock()
	if f.closed {
		f.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

// Close stops the trimmer, waits for the reads and retention steps under
// way, commits what the committer holds and closes the engine. A second
// Close waits for the first and returns its error.
func (f *frontend) Close() error {
	f.closeOnce.Do(func() {
		// The trimmer first: its pass then ends by its context, not with
		// ErrClosed, which it would log.
		f.trims.stop()
		f.probes.stop()
		f.mu.Lock()
		f.closed = true
		f.mu.Unlock()
		f.c.close()
		f.closeErr = f.e.close()
	})
	return f.closeErr
}
