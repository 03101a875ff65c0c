package store

import (
	"context"
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
)

// request is one unit of work for a committer, answered through done.
type request struct {
	op     op
	append Append
	answer Answer // opAnswer: append.From and append.Key name the key
	trim   trimCursor

	res     Appended
	removed int  // opTrim
	more    bool // opTrim: the pass has more steps
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
		c.commit(batch)
		for _, r := range batch {
			close(r.done)
		}
		clear(batch)
	}
}

// do queues r and waits for its commit, or for ctx.
func (c *committer) do(ctx context.Context, r *request) error {
	r.done = make(chan struct{})
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return ErrClosed
	}
	select {
	case c.queue <- r:
	case <-ctx.Done():
		c.mu.RUnlock()
		return ctx.Err()
	}
	c.mu.RUnlock()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
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

// trimmer calls trim every interval until stopped: the background half of
// retention.
type trimmer struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func startTrimmer(interval time.Duration, log *slog.Logger, trim func(context.Context) (int, error)) *trimmer {
	ctx, cancel := context.WithCancel(context.Background())
	t := &trimmer{cancel: cancel, done: make(chan struct{})}
	if interval < 0 {
		close(t.done)
		return t
	}
	go func() {
		defer close(t.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			n, err := trim(ctx)
			switch {
			case err != nil && ctx.Err() == nil:
				log.Warn("store retention pass failed", "err", err)
			case n > 0:
				log.Debug("store retention pass", "removed", n)
			}
		}
	}()
	return t
}

func (t *trimmer) stop() {
	t.cancel()
	<-t.done
}

// queued is the write side both engines share: each call waits in the
// committer, which gives the engine a group of them to commit at once.
type queued struct{ c *committer }

func (q queued) Append(ctx context.Context, a Append) (Appended, error) {
	if err := a.check(); err != nil {
		return Appended{}, err
	}
	r := &request{op: opAppend, append: a}
	if err := q.c.do(ctx, r); err != nil {
		return Appended{}, err
	}
	return r.res, nil
}

func (q queued) RecordAnswer(ctx context.Context, from, key string, ans Answer) error {
	return q.c.do(ctx, &request{op: opAnswer, append: Append{From: from, Key: key}, answer: ans})
}
