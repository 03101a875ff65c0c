package session

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	gorilla "github.com/gorilla/websocket"

	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/protocol"
)

// ignoreFrames is the Handler of tests that only write.
type ignoreFrames struct{}

func (ignoreFrames) HandleFrame(c *Conn, _ *protocol.Frame) { c.Answer(nil) }
func (ignoreFrames) Closed(*Conn, CloseReason)              {}
func (ignoreFrames) Ended(*Conn)                            {}

// serveOne serves WebSocket connections on a coalescing loopback listener,
// as a node does, and hands each served Conn to the test. It returns the
// address to dial.
func serveOne(t *testing.T, cfg Config) (addr string, conns <-chan *Conn) {
	t.Helper()
	return serveWith(t, cfg, ignoreFrames{})
}

// serveWith is serveOne with h handling the connections' frames.
func serveWith(t *testing.T, cfg Config, h Handler) (addr string, conns <-chan *Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan *Conn, 256)
	up := websocket.Upgrader{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := New(1, "bob", cfg)
		c.Send([]byte(`{"type":"welcome"}`))
		ready <- c
		c.Serve(ws.NetConn(), ws.NetConn().(*CoalescingConn), h)
	})}
	go func() { _ = srv.Serve(CoalescingListener{Listener: ln}) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), ready
}

func dialOne(t *testing.T, addr string, conns <-chan *Conn) (*gorilla.Conn, *Conn) {
	t.Helper()
	cl, _, err := gorilla.DefaultDialer.Dial("ws://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	_ = cl.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, p, err := cl.ReadMessage(); err != nil || string(p) != `{"type":"welcome"}` {
		t.Fatalf("welcome: %q, %v", p, err)
	}
	return cl, <-conns
}

// A frame larger than the socket takes at once, sent late in the window of
// the last write's deadline, still gets the whole write timeout: the client
// reads it well within the timeout of the send.
func TestFrameTheSocketTakesInPartGetsTheWholeWriteTimeout(t *testing.T) {
	const timeout = 2 * time.Second
	cfg := Config{WriteTimeout: timeout, PingInterval: time.Hour}
	addr, conns := serveOne(t, cfg)
	cl, c := dialOne(t, addr, conns)
	// The welcome was written by a writer, whose deadline ends at
	// welcome + timeout. Send past the middle of that window...
	time.Sleep(timeout * 6 / 10)
	big := `{"body":"` + strings.Repeat("x", 16<<20) + `"}`
	c.Send([]byte(big))
	// ...and read after the old deadline but well within the new one.
	time.Sleep(timeout / 2)
	_, p, err := cl.ReadMessage()
	if err != nil || len(p) != len(big) {
		t.Fatalf("read %d of %d bytes, %v; the server closed with %v", len(p), len(big), err, c.Reason())
	}
}

// No data frame follows the close frame (RFC 6455 5.5.1), not even one
// written by the sender while the reader is answering the client's close.
func TestNoDataFrameFollowsTheCloseFrame(t *testing.T) {
	addr, conns := serveOne(t, Config{PingInterval: time.Hour, SendQueue: 1 << 20})
	for round := 0; round < 50; round++ {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(nc, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", addr)
		br := bufio.NewReader(nc)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if line == "\r\n" {
				break
			}
		}
		c := <-conns
		sending := make(chan struct{})
		go func() {
			defer close(sending)
			for c.Send([]byte(`{"type":"msg"}`)) && !c.closeBegun.Load() {
			}
		}()
		// A masked close frame, code 1000, with a zero mask.
		if _, err := nc.Write([]byte{0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8}); err != nil {
			t.Fatal(err)
		}
		<-sending
		all, _ := io.ReadAll(br)
		nc.Close()
		closed := false
		for len(all) >= 2 {
			op, n, head := all[0]&0x0f, int(all[1]&0x7f), 2
			switch n {
			case 126:
				n, head = int(binary.BigEndian.Uint16(all[2:])), 4
			case 127:
				n, head = int(binary.BigEndian.Uint64(all[2:])), 10
			}
			if len(all) < head+n {
				break
			}
			if op == 8 {
				closed = true
			} else if closed {
				t.Fatalf("round %d: a frame with opcode %d after the close frame", round, op)
			}
			all = all[head+n:]
		}
		if !closed {
			t.Fatalf("round %d: no close frame", round)
		}
	}
}

// waitWriterGone waits until no writer goroutine owns c's socket.
func waitWriterGone(t *testing.T, c *Conn) {
	t.Helper()
	wait.For(t, 5*time.Second, time.Millisecond, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.writing {
			return errors.New("the writer still runs")
		}
		return nil
	})
}

// A frame the socket refuses while frames are queued behind it is written
// before them.
func TestFrameRefusedBySocketKeepsItsPlace(t *testing.T) {
	addr, conns := serveOne(t, Config{PingInterval: time.Hour})
	cl, c := dialOne(t, addr, conns)
	// The writer of the welcome may still be on its way out; until it is
	// gone, its "writing" would pass for the try of "first" below.
	waitWriterGone(t, c)
	// Hold the socket while "first" is being tried, make the try fail,
	// and queue "second" meanwhile.
	c.raw.mu.Lock()
	c.raw.rawConn = nil
	sent := make(chan struct{})
	go func() {
		c.Send([]byte(`"first"`))
		close(sent)
	}()
	wait.For(t, 5*time.Second, time.Millisecond, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.writing {
			return errors.New("the first frame is not being tried")
		}
		return nil
	})
	c.Send([]byte(`"second"`))
	c.raw.mu.Unlock()
	<-sent
	for _, want := range []string{`"first"`, `"second"`} {
		if _, p, err := cl.ReadMessage(); err != nil || string(p) != want {
			t.Fatalf("read %q, %v; want %s", p, err, want)
		}
	}
}
