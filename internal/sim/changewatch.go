package sim

import (
	"context"
	"sync"
	"time"
)

// changeWatch measures, while changes keep coming, how long after each
// change every directory was next exactly right. A check that passes
// settles every change made before it began; the next change may come
// before a change is settled, and then it is settled with it.
type changeWatch struct {
	c *Cluster

	mu      sync.Mutex
	open    []time.Time // changes not settled yet, oldest first
	took    []time.Duration
	lastErr error
	settled chan struct{} // closed and replaced whenever a check passes

	stop chan struct{}
	done chan struct{}
}

// watchChanges starts checking the directories every few milliseconds.
func (c *Cluster) watchChanges() *changeWatch {
	w := &changeWatch{c: c, settled: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	go w.loop()
	return w
}

func (w *changeWatch) loop() {
	defer close(w.done)
	for {
		start := time.Now()
		err := w.c.CheckDirectories()
		end := time.Now()
		w.mu.Lock()
		w.lastErr = err
		if err == nil {
			for len(w.open) > 0 && w.open[0].Before(start) {
				w.took = append(w.took, end.Sub(w.open[0]))
				w.open = w.open[1:]
			}
			close(w.settled)
			w.settled = make(chan struct{})
		}
		w.mu.Unlock()
		select {
		case <-w.stop:
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// changed records a change made at.
func (w *changeWatch) changed(at time.Time) {
	w.mu.Lock()
	w.open = append(w.open, at)
	w.mu.Unlock()
}

// wait waits until every change is settled, or ctx ends, and stops the
// watch. It returns the time each settled change took, in order, and when
// some are not settled the last check's error.
func (w *changeWatch) wait(ctx context.Context) ([]time.Duration, error) {
	err := w.settleAll(ctx)
	close(w.stop)
	<-w.done // from here on the loop touches nothing
	if err != nil && w.lastErr != nil {
		err = w.lastErr
	}
	return w.took, err
}

func (w *changeWatch) settleAll(ctx context.Context) error {
	for {
		w.mu.Lock()
		open, settled := len(w.open), w.settled
		w.mu.Unlock()
		if open == 0 {
			return nil
		}
		select {
		case <-settled:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
