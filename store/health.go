package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Health is whether the store can take writes now, as its last write or
// its last probe found. A node says it in /api/cluster and in the
// shard_store_up metric.
type Health struct {
	OK    bool
	Since time.Time // when OK last changed (the store's open, at first)
	Cause string    // why not OK: the engine's error
}

// ErrUnavailable wraps the error of a write that the engine could not do
// now, and may do later: PostgreSQL unreachable, restarting or out of
// connections, the embedded engine's disk full (ErrFull). Nothing is
// known to be stored (an Append may have been, see Store.Append): the
// client is told `unavailable`, and a resend with the same key is safe.
var ErrUnavailable = errors.New("store: unavailable")

// ErrFull is ErrUnavailable because the embedded engine's disk has less
// free space than Options.DiskReserve: writes wait for space to return.
var ErrFull = fmt.Errorf("%w: disk full", ErrUnavailable)

const (
	// probeEvery is how often a store checks its engine by itself (a
	// PostgreSQL ping, a statfs of the embedded engine's disk), so that
	// Health turns within about a second without traffic, and back as
	// soon: the 5 s a node has to store again once its database returns
	// are mostly the database's own start.
	probeEvery = time.Second
	// probeTimeout bounds one probe: loopback or a LAN answers in
	// milliseconds, so a second is a database that is not serving.
	probeTimeout = time.Second
)

// health is a store's Health, set by its writes and its probes. Set is
// called on every commit: it costs an atomic load while nothing changes.
type health struct {
	ok  atomic.Bool
	log *slog.Logger

	mu sync.Mutex
	h  Health
}

func newHealth(log *slog.Logger) *health {
	h := &health{log: log, h: Health{OK: true, Since: time.Now()}}
	h.ok.Store(true)
	return h
}

// set records the outcome of a write or a probe: nil is healthy; an
// error is down, with err as its cause. A change is logged once.
func (h *health) set(err error) {
	if err == nil && h.ok.Load() {
		return
	}
	now := time.Now()
	h.mu.Lock()
	was := h.h
	h.h.OK = err == nil
	h.h.Cause = ""
	if err != nil {
		h.h.Cause = err.Error()
	}
	if was.OK != h.h.OK {
		h.h.Since = now
	}
	h.ok.Store(h.h.OK)
	h.mu.Unlock()
	switch {
	case was.OK && err != nil:
		h.log.Warn("message store down: writes are answered unavailable until it is back", "err", err)
	case !was.OK && err == nil:
		h.log.Info("message store back", "down_for", now.Sub(was.Since).Round(time.Millisecond).String())
	}
}

func (h *health) get() Health {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.h
}

// startProber runs probe every probeEvery and records each outcome in h.
func startProber(h *health, probe func(context.Context) error) *background {
	return every(probeEvery, func(ctx context.Context) {
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		err := probe(pctx)
		cancel()
		if ctx.Err() == nil { // stopped: a probe cut short says nothing
			h.set(err)
		}
	})
}
