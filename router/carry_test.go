package router

import (
	"sync"
	"testing"

	"github.com/shardchat/shard/link"
	"github.com/shardchat/shard/protocol"
)

// frameConn is a test connection that keeps the frames it is handed.
type frameConn struct {
	*testConn
	mu     sync.Mutex
	frames []string
}

func (c *frameConn) Send(f []byte) bool { return c.Queue(f) }
func (c *frameConn) Queue(fs ...[]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range fs {
		c.frames = append(c.frames, string(f))
	}
	return true
}

// A forward whose frame is not a well-formed msg (raw bytes, another type,
// broken JSON or UTF-8, in the frame or in the sender's copy) reaches no
// client, and its sender hears that nobody got it.
func TestForwardOfAFrameAClientMayNotGetReachesNobody(t *testing.T) {
	r, addr := testRouter(t, "a")
	if err := r.SetMembers([]Member{{Name: "a", Link: addr, Inc: "a-1"}}); err != nil {
		t.Fatal(err)
	}
	bob := &frameConn{testConn: newTestConn(1, "bob")}
	if err := r.Attach(bob); err != nil {
		t.Fatal(err)
	}
	good := protocol.AppendMsg(nil, &protocol.Msg{Mid: "m1", From: "alice", To: "bob", Body: "hi", TS: 1})
	forward := func(frame, copy []byte) (got int) {
		d := &delivery{target: Key{Name: "bob"}, from: "alice", frame: frame, copy: copy}
		answered := false
		r.serveForward(link.Peer{Name: "b", Inc: "b-1"}, appendForward(nil, d), func(p []byte) {
			answered = true
			got, _, _ = decodeDelivered(p)
		})
		if !answered {
			t.Fatal("a forward was not answered")
		}
		return got
	}
	for _, bad := range []struct{ frame, copy string }{
		{"raw \xff bytes", ""},
		{`{"type":"welcome","user":"bob","node":"n9","store":false,"max_frame":1}`, ""},
		{`{"type":"msg","body":"cut`, ""},
		{"{\"type\":\"msg\",\"body\":\"\xc3\"}", ""},
		{string(good), `{"type":"ack"}`},
	} {
		var copy []byte
		if bad.copy != "" {
			copy = []byte(bad.copy)
		}
		if got := forward([]byte(bad.frame), copy); got != 0 {
			t.Errorf("forward of %q (copy %q) answered %d got it, want 0", bad.frame, bad.copy, got)
		}
	}
	if got := forward(good, nil); got != 1 {
		t.Fatalf("a well-formed msg reached %d connections, want 1", got)
	}
	bob.mu.Lock()
	defer bob.mu.Unlock()
	if len(bob.frames) != 1 || bob.frames[0] != string(good) {
		t.Fatalf("bob's connection got %q, want only the well-formed msg", bob.frames)
	}
}
