package link

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shardchat/shard/internal/cputime"
	"github.com/shardchat/shard/internal/wait"
)

// testKind is a request kind as a caller of the link would number it.
const testKind = FirstRequestKind

// serve starts l serving requests with h.
func serve(l *Links, h Handler) *Links {
	l.Serve(h)
	return l
}

// echoLinks starts two Links, a and b, where b answers every request with
// its payload.
func echoLinks(t testing.TB, keyA, keyB []byte) (a, b *Links) {
	t.Helper()
	return echoLinksQueue(t, keyA, keyB, 0)
}

// echoLinksQueue is echoLinks with Config.Queue set to queue (0: the
// default).
func echoLinksQueue(t testing.TB, keyA, keyB []byte, queue int) (a, b *Links) {
	t.Helper()
	lnA, lnB := listen(t, "127.0.0.1"), listen(t, "127.0.0.1")
	echo := func(_ Peer, _ Kind, p []byte, reply func([]byte)) { reply(p) }
	// 5 s: a burst of 20,000 sealed requests under the race detector, on
	// a 2-core box busy with other work, took up to 1.5 s.
	a = serve(New(Config{Self: "a", Key: keyA, RequestTimeout: 5 * time.Second, Queue: queue}, lnA), echo)
	b = serve(New(Config{Self: "b", Key: keyB, RequestTimeout: 5 * time.Second, Queue: queue}, lnB), echo)
	a.SetPeers(map[string]Member{"b": {Addr: lnB.Addr().String()}})
	b.SetPeers(map[string]Member{"a": {Addr: lnA.Addr().String()}})
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestLinkAnswersEveryRequestInOrder(t *testing.T) {
	// The burst is queued faster than the link drains it, and at first
	// while the link still dials and says hello: with the default queue
	// (16,384, less than the burst) a busy box refused the rest with
	// ErrBackpressure, as it should. Order is what is tested here, not the
	// bound: the queue takes the whole burst.
	const n = 20000
	a, _ := echoLinksQueue(t, []byte("k"), []byte("k"), n)
	var mu sync.Mutex
	var got []uint64
	done := make(chan struct{})
	for i := uint64(0); i < n; i++ {
		a.Request("b", testKind, binary.AppendUvarint(nil, i), func(p []byte, err error) {
			if err != nil {
				t.Errorf("request: %v", err)
			}
			v, _ := binary.Uvarint(p)
			mu.Lock()
			got = append(got, v)
			if len(got) == n {
				close(done)
			}
			mu.Unlock()
		})
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("only %d of %d answers", len(got), n)
	}
	for i, v := range got {
		if v != uint64(i) {
			t.Fatalf("answer %d is for request %d: out of order", i, v)
		}
	}
}

func TestLinkRefusesAPeerWithoutTheClusterKey(t *testing.T) {
	a, _ := echoLinks(t, []byte("right"), []byte("wrong"))
	errc := make(chan error, 1)
	a.Request("b", testKind, []byte{0}, func(_ []byte, err error) { errc <- err })
	select {
	case err := <-errc:
		if !errors.Is(err, ErrPeerDown) {
			t.Fatalf("request over an unauthenticated link: %v, want ErrPeerDown", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("request over an unauthenticated link was never answered")
	}
}

func TestLinkFailsPendingRequestsWhenThePeerGoes(t *testing.T) {
	lnA, _ := net.Listen("tcp", "127.0.0.1:0")
	lnB, _ := net.Listen("tcp", "127.0.0.1:0")
	a := serve(New(Config{Self: "a", RequestTimeout: 5 * time.Second}, lnA), nil)
	defer a.Close()
	held := make(chan func([]byte), 1)
	// b never answers: it holds the reply until the test ends.
	b := serve(New(Config{Self: "b"}, lnB), func(_ Peer, _ Kind, _ []byte, reply func([]byte)) { held <- reply })
	a.SetPeers(map[string]Member{"b": {Addr: lnB.Addr().String()}})
	b.SetPeers(map[string]Member{"a": {Addr: lnA.Addr().String()}})
	errc := make(chan error, 1)
	a.Request("b", testKind, []byte{0}, func(_ []byte, err error) { errc <- err })
	<-held
	b.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrPeerDown) {
			t.Fatalf("pending request after the peer closed: %v, want ErrPeerDown", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a pending request to a peer that went away was never failed")
	}
	a.Request("nobody", testKind, nil, func(_ []byte, err error) { errc <- err })
	if err := <-errc; !errors.Is(err, ErrPeerUnknown) {
		t.Fatalf("request to a non-member: %v, want ErrPeerUnknown", err)
	}
}

// A node dials a peer again only after its old link failed it, and sends
// again on the new link what went unanswered there. Whatever the old link's
// reader on the owner still holds (a frame being served, frames buffered)
// must be served before anything from the new link, whether the owner's end
// of the old link is still open or the owner closed it already: an old
// registration served after a newer one would stand until the key changed.
func TestNewerLinkFromAPeerIsServedOnlyAfterItsOlderOne(t *testing.T) {
	for _, closedFirst := range []bool{false, true} {
		t.Run(map[bool]string{false: "old link open", true: "old link closed by the owner"}[closedFirst], func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var served []string
			held, gate, newServed := make(chan struct{}), make(chan struct{}), make(chan struct{}, 1)
			owner := serve(New(Config{Self: "o", Key: []byte("k")}, ln), func(_ Peer, _ Kind, p []byte, reply func([]byte)) {
				if string(p) == "old 1" {
					close(held)
					<-gate // a slow request (lock contention, GC) on the old link
				}
				mu.Lock()
				served = append(served, string(p))
				mu.Unlock()
				if string(p) == "new 1" {
					newServed <- struct{}{}
				}
				reply(p)
			})
			defer owner.Close()
			lnH, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			holder := serve(New(Config{Self: "h", Key: []byte("k")}, lnH), nil)
			defer holder.Close()
			release := sync.OnceFunc(func() { close(gate) })
			defer release() // before the owner closes, which waits for its readers

			dial := func() handLink { return handDial(t, holder, "o", ln.Addr().String()) }
			write := func(hl handLink, id uint64, p string) { hl.write(id, []byte(p)) }
			reply := func(hl handLink, id uint64, p string) {
				t.Helper()
				if got := hl.reply(t, id); string(got) != p {
					t.Fatalf("request %s: reply %q", p, got)
				}
			}

			old := dial()
			write(old, 1, "old 1")
			write(old, 2, "old 2")
			select {
			case <-held:
			case <-time.After(5 * time.Second):
				t.Fatal("the owner never served old 1")
			}
			if closedFirst {
				owner.mu.Lock()
				var served *conn
				for lc := range owner.in {
					served = lc
				}
				owner.mu.Unlock()
				served.close(ErrPeerDown) // as a failed write would
			}
			nw := dial()
			write(nw, 1, "new 1")
			select {
			case <-newServed:
				t.Fatal("new 1 was served while the old link was still serving old 1")
			case <-time.After(200 * time.Millisecond):
			}
			release()
			reply(nw, 1, "new 1")
			// The owner ended the old link: a read there ends, and what is
			// written there now is never served.
			old.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				if _, _, _, err := readFrame(old.br, MaxFrame, old.lc.open); err != nil {
					if errors.Is(err, os.ErrDeadlineExceeded) {
						t.Fatal("the old link stayed open after a newer one came up")
					}
					break
				}
			}
			write(old, 3, "old 3")
			write(nw, 2, "new 2")
			reply(nw, 2, "new 2")
			mu.Lock()
			defer mu.Unlock()
			got := strings.Join(served, ", ")
			if got != "old 1, new 1, new 2" && got != "old 1, old 2, new 1, new 2" {
				t.Fatalf("the owner served %s, want the old link's frames (old 1, maybe old 2) before the new one's", got)
			}
		})
	}
}

// handLink is a link to a peer as holder speaks it, written and read by
// hand, so that a test holds it as it likes: it may write requests and
// read no replies.
type handLink struct {
	net.Conn
	br *bufio.Reader
	lc *conn
}

func handDial(t *testing.T, holder *Links, peer, addr string) handLink {
	t.Helper()
	lc := newConn(holder, peer, addr)
	conn, err := net.Dial("tcp", lc.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	lc.nc = conn
	br := bufio.NewReader(conn)
	if err := lc.clientHandshake(br); err != nil {
		t.Fatal(err)
	}
	return handLink{conn, br, lc}
}

func (hl handLink) write(id uint64, p []byte) error {
	_, err := hl.Write(hl.lc.seal.appendFrame(nil, testKind, id, p))
	return err
}

// reply reads the next frame, which must be the reply to request id.
func (hl handLink) reply(t *testing.T, id uint64) []byte {
	t.Helper()
	hl.SetReadDeadline(time.Now().Add(5 * time.Second))
	k, gotID, got, err := readFrame(hl.br, MaxFrame, hl.lc.open)
	if err != nil || k != KindReply || gotID != id {
		t.Fatalf("reply to request %d: %v %d %v", id, k, gotID, err)
	}
	return got
}

// A peer that sends requests and reads none of the answers makes a node
// hold no more than Config.Queue of them: the node stops reading its
// requests instead. Once the peer reads again, every request is answered.
func TestLinkHoldsAtMostAQueueOfAnswersForAPeerThatDoesNotRead(t *testing.T) {
	const queue = 4
	ln := listen(t, "127.0.0.1")
	owner := serve(New(Config{Self: "o", Key: []byte("k"), Queue: queue}, ln), func(_ Peer, _ Kind, p []byte, reply func([]byte)) { reply(p) })
	t.Cleanup(owner.Close)
	holder := serve(New(Config{Self: "h", Key: []byte("k")}, listen(t, "127.0.0.1")), nil)
	t.Cleanup(holder.Close)
	hl := handDial(t, holder, "o", ln.Addr().String())

	// 400 answers of 64 KiB, far more than the sockets between them hold.
	const n = 400
	p := bytes.Repeat([]byte("x"), 64<<10)
	wrote := make(chan error, 1)
	go func() {
		for id := uint64(1); id <= n; id++ {
			if err := hl.write(id, p); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	wait.For(t, 5*time.Second, time.Millisecond, func() error {
		if q := owner.Queued(); q < queue {
			return fmt.Errorf("the owner queued %d answers for a peer that reads nothing, want its queue (%d) full", q, queue)
		}
		return nil
	})
	// The frame the reader was serving when the queue filled may join it.
	if q := owner.Queued(); q > queue+1 {
		t.Fatalf("the owner holds %d answers for a peer that reads nothing, want at most %d", q, queue+1)
	}
	for id := uint64(1); id <= n; id++ {
		if got := hl.reply(t, id); !bytes.Equal(got, p) {
			t.Fatalf("reply %d: %d bytes, want the request's %d", id, len(got), len(p))
		}
	}
	if err := <-wrote; err != nil {
		t.Fatalf("writing the requests: %v", err)
	}
}

// BenchmarkLinkRequest is one request and its reply between two nodes on
// loopback, 1024 in flight at most: without a key (frames in the clear) and
// with one (every frame sealed).
func BenchmarkLinkRequest(b *testing.B) {
	for _, keyed := range []struct {
		name string
		key  []byte
	}{{"plain", nil}, {"sealed", []byte("k")}} {
		b.Run(keyed.name, func(b *testing.B) {
			a, _ := echoLinks(b, keyed.key, keyed.key)
			payload := make([]byte, 136) // a forwarded direct message with a 120-byte msg frame
			var wg sync.WaitGroup
			b.ReportAllocs()
			b.ResetTimer()
			start := cputime.Self()
			for i := 0; i < b.N; i++ {
				wg.Add(1)
				a.Request("b", testKind, payload, func([]byte, error) { wg.Done() })
				if i%1024 == 1023 {
					wg.Wait() // stay within the link queue
				}
			}
			wg.Wait()
			cputime.Report(b, start)
		})
	}
}

// flakyListener fails its first Accept as a process out of file
// descriptors does, then accepts as ln does.
type flakyListener struct {
	net.Listener
	failed bool
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if !l.failed {
		l.failed = true
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// A failed accept (too many open files: a burst of clients) is no reason
// to stop accepting peers' links: their requests would all fail until the
// node restarted, while gossip still says it is alive.
func TestLinkAcceptsAgainAfterAnAcceptFailed(t *testing.T) {
	lnA, lnB := listen(t, "127.0.0.1"), listen(t, "127.0.0.1")
	echo := func(_ Peer, _ Kind, p []byte, reply func([]byte)) { reply(p) }
	a := serve(New(Config{Self: "a"}, lnA), echo)
	b := serve(New(Config{Self: "b"}, &flakyListener{Listener: lnB}), echo)
	t.Cleanup(func() { a.Close(); b.Close() })
	a.SetPeers(map[string]Member{"b": {Addr: lnB.Addr().String()}})
	b.SetPeers(map[string]Member{"a": {Addr: lnA.Addr().String()}})
	if err := ask(t, a, "b", []byte("hi")); err != nil {
		t.Fatalf("request to a peer whose listener failed one accept: %v, want its answer", err)
	}
}

// BenchmarkLinkRoundTrip is one request and its reply at a time, as a
// message forwarded at a few thousand a second goes: no batch to share a
// system call or a wake-up with. cpu-us/op is what both ends spend on it.
func BenchmarkLinkRoundTrip(b *testing.B) {
	a, _ := echoLinks(b, nil, nil)
	payload := make([]byte, 136)
	done := make(chan struct{})
	cb := func([]byte, error) { done <- struct{}{} }
	a.Request("b", testKind, payload, cb) // dial and hello
	<-done
	b.ReportAllocs()
	b.ResetTimer()
	start := cputime.Self()
	for i := 0; i < b.N; i++ {
		a.Request("b", testKind, payload, cb)
		<-done
	}
	cputime.Report(b, start)
}

// Frames bigger than a socket takes at once (its send buffer fills, a
// write is cut short) still arrive whole and in order, on a plain link and
// a sealed one, whether the goroutine that queued them or the link's
// writer finishes writing them.
func TestLinkCarriesFramesBiggerThanTheSocketTakesAtOnce(t *testing.T) {
	for _, key := range [][]byte{nil, []byte("k")} {
		a, _ := echoLinks(t, key, key)
		if err := ask(t, a, "b", []byte("hi")); err != nil { // the link is up: frames go at once
			t.Fatal(err)
		}
		const n = 8
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			p := bytes.Repeat([]byte{byte('a' + i)}, 1<<20+i)
			wg.Add(1)
			a.Request("b", testKind, p, func(got []byte, err error) {
				defer wg.Done()
				if err != nil || !bytes.Equal(got, p) {
					t.Errorf("request %d of %d bytes: answered %d bytes, err %v; want its payload back", i, len(p), len(got), err)
				}
			})
		}
		wg.Wait() // every request is answered or fails within RequestTimeout
	}
}
