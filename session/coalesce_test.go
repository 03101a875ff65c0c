package session

import (
	"io"
	"net"
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
