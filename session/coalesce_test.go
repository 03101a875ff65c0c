package session

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/shardchat/shard/protocol"
)

// BenchmarkWriteTextNow is a delivery to an idle connection: one frame of
// a typical direct message written with one non-blocking system call, over
// real loopback TCP with a reader draining the other end.
func BenchmarkWriteTextNow(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	go func() { _, _ = io.Copy(io.Discard, client) }()
	nc, err := CoalescingListener{Listener: ln}.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	c := nc.(*CoalescingConn)
	frame := protocol.AppendMsg(nil, &protocol.Msg{Mid: "BOHO0SGM9KVPJCH8-3d", From: "alice", To: "bob", Body: "see you at the station at eight", TS: 1764000000000})
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		taken, tail, err := c.WriteTextNow(frame)
		switch {
		case err != nil:
			b.Fatal(err)
		case !taken:
			b.Fatal("an idle connection refused the write")
		case tail: // the reader fell behind: flush as a writer would
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			c.Hold(time.Time{})
			if err := c.Release(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// A long frame whose payload the WebSocket library writes apart from its
// header, and whose second part starts with byte 0x88 (a UTF-8 continuation
// byte, as in "∈"), is not taken for a close frame: the connection keeps
// writing deliveries at once instead of queueing every one of them for a
// writer from then on.
func TestPayloadThatStartsLikeACloseFrameKeepsTheFastPath(t *testing.T) {
	addr, conns := serveOne(t, Config{PingInterval: time.Hour})
	cl, c := dialOne(t, addr, conns)
	small := []byte(`{"type":"msg","body":"still fast"}`)
	// The library writes the first few KiB of a frame with its header and
	// the rest in a second write; three alignments of "∈" (E2 88 88) put
	// 0x88 at the start of that rest in two of them.
	for shift := 0; shift < 3; shift++ {
		big := `{"body":"` + strings.Repeat("x", shift) + strings.Repeat("∈", 4000) + `"}`
		c.Queue([]byte(big)) // through the writer, and so through the library
		if _, p, err := cl.ReadMessage(); err != nil || string(p) != big {
			t.Fatalf("shift %d: read %d bytes, %v; want the %d-byte frame", shift, len(p), err, len(big))
		}
		waitWriterGone(t, c)
		taken, _, err := c.raw.WriteTextNow(small)
		if err != nil || !taken {
			t.Fatalf("shift %d: after a long frame, a delivery to the idle connection was refused the direct write (taken %v, %v)", shift, taken, err)
		}
		if _, p, err := cl.ReadMessage(); err != nil || string(p) != string(small) {
			t.Fatalf("shift %d: read %q, %v", shift, p, err)
		}
	}
}
