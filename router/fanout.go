package router

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/shardchat/shard/link"
	"github.com/shardchat/shard/protocol"
)

// fanout gathers the answers of the nodes one message went to.
type fanout struct {
	direct bool // a user's delivery (else a room's)
	stored bool // the message is in the store: see finish
	done   func(result)

	mu        sync.Mutex
	remaining int
	count     int   // connections that got it
	refused   int   // connections of the recipient that were closing
	failed    error // a node it went to did not answer
	unrouted  error // it went nowhere: where its target is could not be told
}

func (f *fanout) expect(n int) {
	f.mu.Lock()
	f.remaining = n
	f.mu.Unlock()
}

func (f *fanout) add(got, refused int) {
	f.mu.Lock()
	f.count += got
	f.refused += refused
	f.mu.Unlock()
}

// The answer to a forward: how many connections got the message, and how
// many refused it because they were closing.
func appendDelivered(b []byte, got, refused int) []byte {
	b = binary.AppendUvarint(b, uint64(got))
	return binary.AppendUvarint(b, uint64(refused))
}

func decodeDelivered(p []byte) (got, refused int, err error) {
	d := link.NewDecoder(p)
	got, refused = int(d.Uvarint()), int(d.Uvarint())
	return got, refused, d.Done()
}

func (f *fanout) reply(p []byte, err error) {
	got, refused := 0, 0
	if err == nil {
		if got, refused, err = decodeDelivered(p); err != nil {
			err = fmt.Errorf("forward reply: %w", err)
		}
	}
	f.mu.Lock()
	f.count += got
	f.refused += refused
	if err != nil && f.failed == nil {
		f.failed = err
	}
	f.remaining--
	last := f.remaining == 0
	f.mu.Unlock()
	if last {
		f.finish()
	}
}

// fail ends a fanout that could not start: the cluster could not say where
// its target is.
func (f *fanout) fail(err error) {
	f.mu.Lock()
	f.unrouted = err
	f.mu.Unlock()
	f.finish()
}

func (f *fanout) finish() {
	f.mu.Lock()
	count, refused, failed, unrouted := f.count, f.refused, f.failed, f.unrouted
	f.mu.Unlock()
	switch {
	case !f.direct && unrouted != nil && !f.stored:
		f.done(result{err: unrouted})
	case !f.direct:
		// Recipients on a node that could not be reached are not counted:
		// the number says who got it. A stored message that reached no one
		// because the room's owner could not be asked is kept all the same:
		// `sent` to those it reached, never `unavailable`, which would have
		// its sender send it again.
		f.done(result{status: protocol.StatusSent, recipients: count})
	case count > 0:
		f.done(result{status: protocol.StatusDelivered})
	case f.stored:
		// No connection got it now, or the route failed: it waits in the
		// inbox either way, for the next sync.
		f.done(result{status: protocol.StatusStored})
	case unrouted != nil:
		f.done(result{err: unrouted})
	case failed != nil:
		f.done(result{err: failed})
	case refused > 0:
		// The recipient is connected but moving (its node is draining, or
		// it was just cut): not offline, retry shortly.
		f.done(result{err: errRecipientMoving})
	default:
		f.done(result{status: protocol.StatusOffline})
	}
}

var errRecipientMoving = errors.New("the recipient's connection is closing")
