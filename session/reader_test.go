package session

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/protocol"
)

// echoIDs answers every frame with {"id":...}, and counts the connections
// that ended.
type echoIDs struct{ ended atomic.Int32 }

func (*echoIDs) HandleFrame(c *Conn, f *protocol.Frame) {
	c.Answer([]byte(`{"id":"` + f.ID + `"}`))
}
func (*echoIDs) Closed(*Conn, CloseReason) {}
func (e *echoIDs) Ended(*Conn)             { e.ended.Add(1) }

// clientFrame is one masked client frame (RFC 6455 5.2), as a browser
// sends it.
func clientFrame(fin bool, opcode byte, payload string) []byte {
	b0 := opcode
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xFFFF:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	b = append(b, key[:]...)
	for i := 0; i < len(payload); i++ {
		b = append(b, payload[i]^key[i&3])
	}
	return b
}

func readText(t *testing.T, cl *gorilla.Conn) string {
	t.Helper()
	_ = cl.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, p, err := cl.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(p)
}

// Frames that arrive a byte at a time, several in one write, fragmented,
// with a ping between the fragments, or large, are each acted on once, in
// order: the reader keeps what has not all arrived for the next read.
func TestFramesCutAnywhereArriveWholeAndInOrder(t *testing.T) {
	addr, conns := serveWith(t, Config{PingInterval: time.Hour, Rate: 100000, MaxFrame: 1 << 20}, &echoIDs{})
	cl, _ := dialOne(t, addr, conns)
	raw := cl.NetConn()
	write := func(b []byte) {
		t.Helper()
		if _, err := raw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	// One frame a byte at a time.
	for _, b := range clientFrame(true, opText, `{"type":"send","id":"a","to":"x","body":"1"}`) {
		write([]byte{b})
	}
	// Two frames in one write.
	write(append(clientFrame(true, opText, `{"type":"send","id":"b","to":"x","body":"2"}`),
		clientFrame(true, opText, `{"type":"send","id":"c","to":"x","body":"3"}`)...))
	// A message in three fragments, a ping among them.
	write(clientFrame(false, opText, `{"type":"send","id":"d",`))
	write(clientFrame(true, opPing, "hi"))
	write(append(clientFrame(false, opContinuation, `"to":"x",`), clientFrame(true, opContinuation, `"body":"4"}`)...))
	// A frame larger than one read, with a 16-bit and a 64-bit length.
	for _, id := range []string{"e", "f"} {
		size := 20000
		if id == "f" {
			size = 70000
		}
		write(clientFrame(true, opText, `{"type":"send","id":"`+id+`","to":"x","body":"`+strings.Repeat("y", size)+`"}`))
	}
	pong := make(chan string, 1)
	cl.SetPongHandler(func(p string) error { pong <- p; return nil })
	for _, id := range []string{"a", "b", "c", "d", "e", "f"} {
		if got, want := readText(t, cl), `{"id":"`+id+`"}`; got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	}
	select {
	case p := <-pong:
		if p != "hi" {
			t.Fatalf("pong %q, want the ping's payload", p)
		}
	default:
		t.Fatal("the ping between fragments got no pong")
	}
}

// A frame RFC 6455 forbids from a client (unmasked here) is answered with a
// close frame that says what was wrong (1002), and the connection ends.
func TestUnmaskedFrameIsAProtocolError(t *testing.T) {
	h := &echoIDs{}
	addr, conns := serveWith(t, Config{PingInterval: time.Hour}, h)
	cl, c := dialOne(t, addr, conns)
	if _, err := cl.NetConn().Write([]byte{0x81, 2, '{', '}'}); err != nil {
		t.Fatal(err)
	}
	_ = cl.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := cl.ReadMessage()
	var ce *gorilla.CloseError
	if !errors.As(err, &ce) || ce.Code != gorilla.CloseProtocolError || !strings.Contains(ce.Text, "masked") {
		t.Fatalf("after an unmasked frame: %v, want close 1002 naming the mask", err)
	}
	wait.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if h.ended.Load() != 1 {
			return errors.New("the connection has not ended")
		}
		return nil
	})
	if got := c.Reason(); got != CloseProtocolError {
		t.Errorf("closed for %q, want %q (the metrics' label)", got.Label, CloseProtocolError.Label)
	}
}

// A connection from which nothing comes is closed after two ping intervals,
// with no reader waiting on it meanwhile; one that answers the pings stays.
func TestSilentConnectionEndsAndAnAnsweringOneStays(t *testing.T) {
	h := &echoIDs{}
	addr, conns := serveWith(t, Config{PingInterval: 50 * time.Millisecond}, h)
	silent, _ := dialOne(t, addr, conns) // never reads again: answers no ping
	_ = silent
	alive, _ := dialOne(t, addr, conns)
	go func() {
		for {
			if _, _, err := alive.ReadMessage(); err != nil {
				return // gorilla answers pings while reading
			}
		}
	}()
	wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := h.ended.Load(); n != 1 {
			return fmt.Errorf("%d connections ended, want the silent one", n)
		}
		return nil
	})
	if err := alive.WriteControl(gorilla.PingMessage, nil, time.Now().Add(time.Second)); err != nil {
		t.Fatalf("the answering connection was cut: %v", err)
	}
	if n := h.ended.Load(); n != 1 {
		t.Fatalf("%d connections ended, want 1", n)
	}
}

// Idle connections hold no goroutine: readers run only while bytes are
// there, and a connection that has sent and gone quiet gives its reader
// back (after activeLinger).
func TestIdleConnectionsHoldNoGoroutine(t *testing.T) {
	addr, conns := serveWith(t, Config{PingInterval: time.Hour}, &echoIDs{})
	const n = 200
	before := runtime.NumGoroutine()
	clients := make([]*gorilla.Conn, n)
	for i := range clients {
		clients[i], _ = dialOne(t, addr, conns)
	}
	// The writers of the welcomes and the HTTP server's handlers finish on
	// their own; wait for them rather than for a fixed time.
	settled := func() error {
		if grown := runtime.NumGoroutine() - before; grown > n/10 {
			return fmt.Errorf("%d goroutines more with %d idle connections", grown, n)
		}
		return nil
	}
	wait.For(t, 10*time.Second, 10*time.Millisecond, settled)

	for i, cl := range clients {
		id := "q" + strconv.Itoa(i)
		if err := cl.WriteMessage(gorilla.TextMessage, []byte(`{"type":"ping","id":"`+id+`"}`)); err != nil {
			t.Fatal(err)
		}
		if _, p, err := cl.ReadMessage(); err != nil || !strings.Contains(string(p), id) {
			t.Fatalf("answer to %s: %q, %v", id, p, err)
		}
	}
	wait.For(t, 10*time.Second, 10*time.Millisecond, settled)
}

// blockingHandler holds each frame until release is closed, and says on
// entered that it holds one.
type blockingHandler struct {
	entered chan struct{}
	release chan struct{}
}

func (h *blockingHandler) HandleFrame(c *Conn, _ *protocol.Frame) {
	h.entered <- struct{}{}
	<-h.release
	c.Answer(nil)
}
func (*blockingHandler) Closed(*Conn, CloseReason) {}
func (*blockingHandler) Ended(*Conn)               {}

// A connection cut while its reader waits in a frame's handler (a store
// call, a lookup at an owner) closes for its client at once, not when the
// handler returns: the reader handles frames inside the runtime's read,
// which the socket's close would otherwise wait for.
func TestCutWhileAHandlerWaitsClosesForTheClientAtOnce(t *testing.T) {
	h := &blockingHandler{entered: make(chan struct{}, 1), release: make(chan struct{})}
	defer close(h.release)
	addr, conns := serveWith(t, Config{PingInterval: time.Hour}, h)
	cl, c := dialOne(t, addr, conns)
	raw := cl.NetConn()
	if _, err := raw.Write(clientFrame(true, opText, `{"type":"send","id":"a","to":"x","body":"1"}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the frame never reached the handler")
	}
	c.Close(CloseSlowConsumer)
	// The handler holds on until the test ends: the client must see the
	// end of the stream before then.
	_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 1024)
	for {
		_, err := raw.Read(b)
		if err == nil {
			continue
		}
		if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
			t.Fatal("the cut connection stayed open for its client while a handler waited")
		}
		break // EOF or a reset: closed
	}
}
