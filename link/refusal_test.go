package link

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/shardchat/shard/internal/wait"
)

// A flood of connections that never finish a hello holds at most
// MaxHandshakes of them; the others are closed at once and counted, and a
// length prefix past the hello's bound closes at once too. A real peer gets
// through once the flood stops.
func TestLinkAuthenticatesOnlyAFewConnectionsAtOnce(t *testing.T) {
	lnB := listen(t, "127.0.0.1")
	b := serve(New(Config{Self: "b", Key: []byte("k"), MaxHandshakes: 4, DialTimeout: 3 * time.Second}, lnB),
		func(_ Peer, _ Kind, p []byte, reply func([]byte)) { reply(p) })
	defer b.Close()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", lnB.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// closedSoon says whether b closed c within a second: well before
	// the 3 s a hello may take.
	closedSoon := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(time.Second))
		_, err := c.Read(make([]byte, 1))
		return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
	}
	idle := make([]net.Conn, 4)
	for i := range idle {
		idle[i] = dial()
	}
	// b accepts in order: once the fifth is refused, the four hold their slots.
	busy := dial()
	if !closedSoon(busy) {
		t.Fatal("a connection past MaxHandshakes was kept")
	}
	if got := b.Refused(RefusedBusy); got != 1 {
		t.Fatalf("%d refused as busy, want 1", got)
	}
	// A connection that ends before its hello counts as malformed.
	for _, c := range idle {
		c.Close()
	}
	wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if got := b.Refused(RefusedMalformed); got != 4 {
			return fmt.Errorf("%d refused as malformed, want the 4 that closed", got)
		}
		return nil
	})
	big := dial()
	big.Write(binary.BigEndian.AppendUint32(nil, MaxFrame))
	if !closedSoon(big) {
		t.Fatal("a hello with a 4 MiB length prefix was kept waiting for its bytes")
	}
	if got := b.Refused(RefusedMalformed); got != 5 {
		t.Fatalf("%d refused as malformed, want 5", got)
	}
	lnA := listen(t, "127.0.0.1")
	a := serve(New(Config{Self: "a", Key: []byte("k")}, lnA), nil)
	defer a.Close()
	a.SetPeers(map[string]Member{"b": {Addr: lnB.Addr().String()}})
	if err := ask(t, a, "b", []byte("x")); err != nil {
		t.Fatalf("a member's request after the flood: %v", err)
	}
}

// records keeps the log records it is handed.
type records struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.recs = append(r.recs, rec)
	r.mu.Unlock()
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

func (r *records) take() []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.recs
	r.recs = nil
	return out
}

func attr(rec slog.Record, key string) string {
	v := ""
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
		}
		return true
	})
	return v
}

// A flood of refused connections costs one log line per remote per
// interval, with the count, not one per connection.
func TestLinkRefusalsAreLoggedOncePerRemotePerInterval(t *testing.T) {
	log := &records{}
	r := newRefusals(slog.New(log))
	now := time.Now()
	flooder := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 5), Port: 4000}
	for i := 0; i < 300; i++ {
		flooder.Port++
		r.refuse(flooder, "mallory", RefusedNotMember, errNotMember, now)
	}
	r.refuse(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 6), Port: 4000}, "", RefusedBusy, errNotMember, now)
	if got := log.take(); len(got) != 2 || attr(got[0], "remote") != "127.0.0.5" || attr(got[1], "remote") != "127.0.0.6" {
		t.Fatalf("refusals from two remotes logged as %d lines, want one each at once", len(got))
	}
	r.flush(now.Add(refusalInterval / 2))
	if got := log.take(); len(got) != 0 {
		t.Fatalf("%d lines before the interval ended", len(got))
	}
	r.flush(now.Add(refusalInterval))
	got := log.take()
	if len(got) != 1 || attr(got[0], "remote") != "127.0.0.5" || attr(got[0], "times") != "299" {
		t.Fatalf("after the interval: %d lines, want one for 127.0.0.5 with times=299", len(got))
	}
	// A remote quiet for an interval is forgotten: its next refusal is
	// news again, logged at once.
	r.flush(now.Add(2 * refusalInterval))
	r.refuse(flooder, "mallory", RefusedNotMember, errNotMember, now.Add(2*refusalInterval))
	if got := log.take(); len(got) != 1 || attr(got[0], "times") != "" {
		t.Fatalf("a refusal after a quiet interval: %d lines, want one at once", len(got))
	}
	if got := r.count(RefusedNotMember); got != 301 {
		t.Fatalf("counted %d refusals as not members, want 301", got)
	}
}
