package node_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/shardchat/shard/client"
	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/node"
	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/session"
)

// rawConn is a WebSocket speaking whatever the test writes.
type rawConn struct {
	t  *testing.T
	ws *websocket.Conn
}

func dialRaw(t *testing.T, c *testcluster.Cluster, i int, user string) *rawConn {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(c.URL(i)+"?user="+url.QueryEscape(user), nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	resp.Body.Close()
	t.Cleanup(func() { ws.Close() })
	rc := &rawConn{t: t, ws: ws}
	if f := rc.read(); f["type"] != protocol.TypeWelcome {
		t.Fatalf("first frame %v, want welcome", f)
	}
	return rc
}

func (rc *rawConn) write(kind int, p string) {
	rc.t.Helper()
	if err := rc.ws.WriteMessage(kind, []byte(p)); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

func (rc *rawConn) read() map[string]any {
	rc.t.Helper()
	rc.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, p, err := rc.ws.ReadMessage()
	if err != nil {
		rc.t.Fatalf("read: %v", err)
	}
	var f map[string]any
	if err := json.Unmarshal(p, &f); err != nil {
		rc.t.Fatalf("server sent a frame that is not JSON: %.200q", p)
	}
	return f
}

func TestBadFramesGetTheAnswerSpecGives(t *testing.T) {
	c := testcluster.Start(t, 3, nil)
	bystander := c.Dial(0, "bob")
	friend := c.Dial(1, "alice")
	mallory := dialRaw(t, c, 0, "mallory")

	long := strings.Repeat("x", 65)
	cases := []struct {
		name, frame string
		binary      bool
		wantID      any // nil: the error must carry no id
	}{
		{"invalid JSON", `{"type":"send",`, false, nil},
		{"not an object", `["send","bob"]`, false, nil},
		{"invalid UTF-8", "{\"type\":\"send\",\"id\":\"u1\",\"to\":\"bob\",\"body\":\"\xff\xfe\"}", false, "u1"},
		{"unknown type", `{"type":"fly","id":"c1"}`, false, "c1"},
		{"missing type", `{"id":"c2"}`, false, "c2"},
		{"send without to or room", `{"type":"send","id":"c3","body":"x"}`, false, "c3"},
		{"send with to and room", `{"type":"send","id":"c4","to":"bob","room":"lobby","body":"x"}`, false, "c4"},
		{"malformed to", `{"type":"send","id":"c5","to":"b o b","body":"x"}`, false, "c5"},
		{"empty to", `{"type":"send","id":"c6","to":"","body":"x"}`, false, "c6"},
		{"to too long", `{"type":"send","id":"c7","to":"` + long + `","body":"x"}`, false, "c7"},
		{"to not a string", `{"type":"send","id":"c8","to":5,"body":"x"}`, false, "c8"},
		{"empty body", `{"type":"send","id":"c9","to":"bob","body":""}`, false, "c9"},
		{"missing body", `{"type":"send","id":"c10","to":"bob"}`, false, "c10"},
		{"body not a string", `{"type":"send","id":"c11","to":"bob","body":{"a":1}}`, false, "c11"},
		{"join without room", `{"type":"join","id":"c12"}`, false, "c12"},
		{"malformed room", `{"type":"join","id":"c13","room":"#lobby"}`, false, "c13"},
		{"typing to no one", `{"type":"typing","id":"c14"}`, false, "c14"},
		{"typing to a user and a room", `{"type":"typing","id":"c15","to":"bob","room":"lobby"}`, false, "c15"},
		{"watch without users", `{"type":"watch","id":"c16","users":[]}`, false, "c16"},
		{"watch of a malformed user", `{"type":"watch","id":"c17","users":["bob","b o b"]}`, false, "c17"},
		{"unwatch of not a list", `{"type":"unwatch","id":"c18","users":"bob"}`, false, "c18"},
		{"malformed id", `{"type":"send","id":"no spaces","to":"bob","body":"x"}`, false, nil},
		{"id not a string", `{"type":"send","id":7,"to":"bob","body":"x"}`, false, nil},
		{"binary frame", `{"type":"ping","id":"b1"}`, true, nil},
	}
	for _, tc := range cases {
		kind := websocket.TextMessage
		if tc.binary {
			kind = websocket.BinaryMessage
		}
		mallory.write(kind, tc.frame)
		f := mallory.read()
		if f["type"] != protocol.TypeError || f["code"] != protocol.CodeBadRequest {
			t.Errorf("%s: answer %v, want error bad_request", tc.name, f)
			continue
		}
		if f["id"] != tc.wantID {
			t.Errorf("%s: error id %v, want %v", tc.name, f["id"], tc.wantID)
		}
		if msg, _ := f["message"].(string); msg == "" {
			t.Errorf("%s: error without a message", tc.name)
		}
	}
	// Nothing bad reached bob, and the connection still works.
	mallory.write(websocket.TextMessage, `{"type":"ping","id":"p1"}`)
	if f := mallory.read(); f["type"] != protocol.TypePong || f["id"] != "p1" {
		t.Fatalf("ping after bad frames: %v, want pong p1", f)
	}
	noMsg(t, bystander, "bob")

	// An oversized frame closes the connection with 1009.
	mallory.write(websocket.TextMessage, `{"type":"send","id":"big","to":"bob","body":"`+strings.Repeat("a", 70000)+`"}`)
	mallory.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := mallory.ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
		t.Fatalf("after an oversized frame: %v, want close 1009", err)
	}
	// The node keeps serving everyone else.
	sendOK(t, friend, "bob", "still here?", protocol.StatusDelivered)
	if m := recvMsg(t, bystander, "bob"); m.Body != "still here?" {
		t.Fatalf("bob got %q", m.Body)
	}
}

func TestMalformedUserInURLIsRefusedBeforeUpgrade(t *testing.T) {
	c := testcluster.Start(t, 1, nil)
	for _, q := range []string{"", "?user=", "?user=a%20b", "?user=" + strings.Repeat("u", 65), "?user=%C3%A9"} {
		_, resp, err := websocket.DefaultDialer.Dial(c.URL(0)+q, nil)
		if err == nil {
			t.Fatalf("upgrade with %q succeeded, want 400", q)
		}
		if resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("upgrade with %q: %v, want 400", q, err)
		}
		assertErrorBody(t, resp, protocol.CodeBadRequest)
	}
}

func assertErrorBody(t *testing.T, resp *http.Response, code string) {
	t.Helper()
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal(b, &body); err != nil || body.Error.Code != code || body.Error.Message == "" {
		t.Fatalf("error body %q, want {\"error\":{\"code\":%q,\"message\":...}}", b, code)
	}
}

func TestRateLimitRefusesFramesBeyondTheBucket(t *testing.T) {
	c := testcluster.Start(t, 1, func(_ int, cfg *node.Config) { cfg.Session.Rate = 5 })
	rc := dialRaw(t, c, 0, "flooder")
	const frames = 40 // the bucket holds 2 x 5 = 10
	for i := 0; i < frames; i++ {
		rc.write(websocket.TextMessage, fmt.Sprintf(`{"type":"ping","id":"p%d"}`, i))
	}
	pongs, limited := 0, 0
	for i := 0; i < frames; i++ {
		switch f := rc.read(); {
		case f["type"] == protocol.TypePong:
			pongs++
		case f["type"] == protocol.TypeError && f["code"] == protocol.CodeRateLimited && f["id"] != nil:
			limited++
		default:
			t.Fatalf("unexpected answer %v", f)
		}
	}
	if pongs < 10 || pongs > 12 || limited != frames-pongs {
		t.Fatalf("%d pongs and %d rate_limited of %d frames, want about 10 pongs (the burst) and the rest limited", pongs, limited, frames)
	}
	// The connection stays open and recovers as the bucket refills.
	wait.For(t, 3*time.Second, 100*time.Millisecond, func() error {
		rc.write(websocket.TextMessage, `{"type":"ping","id":"again"}`)
		if f := rc.read(); f["type"] != protocol.TypePong {
			return errors.New("still rate limited")
		}
		return nil
	})
}

// Binary messages and WebSocket pings take tokens too: a flood of either
// gets no more answers than the bucket holds, and empties it for the frames
// after it.
func TestRateLimitCountsBinaryFramesAndPings(t *testing.T) {
	c := testcluster.Start(t, 1, func(_ int, cfg *node.Config) { cfg.Session.Rate = 5 })
	const frames = 40 // the bucket holds 2 x 5 = 10

	binary := dialRaw(t, c, 0, "binary")
	for i := 0; i < frames; i++ {
		binary.write(websocket.BinaryMessage, "\x00\x01")
	}
	refused, limited := 0, 0
	for i := 0; i < frames; i++ {
		switch f := binary.read(); {
		case f["code"] == protocol.CodeBadRequest:
			refused++
		case f["code"] == protocol.CodeRateLimited:
			limited++
		default:
			t.Fatalf("a binary frame answered %v", f)
		}
	}
	if refused > 12 {
		t.Errorf("%d of %d binary frames answered bad_request and %d rate_limited, want about 10 (the burst) and the rest rate_limited", refused, frames, limited)
	}

	pinger := dialRaw(t, c, 0, "pinger")
	pongs := 0
	pinger.ws.SetPongHandler(func(string) error { pongs++; return nil })
	for i := 0; i < frames; i++ {
		if err := pinger.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	// Pongs are written as the pings are read, before this frame's answer.
	pinger.write(websocket.TextMessage, `{"type":"ping","id":"after"}`)
	answer := pinger.read()
	t.Logf("binary: %d bad_request, %d rate_limited; pings: %d of %d answered", refused, limited, pongs, frames)
	if pongs > 12 || answer["code"] != protocol.CodeRateLimited {
		t.Errorf("%d of %d WebSocket pings answered, then a ping frame answered %v; want about 10 pongs (the burst), then rate_limited", pongs, frames, answer)
	}
}

func TestEveryFrameIDIsAnsweredExactlyOnce(t *testing.T) {
	c := testcluster.Start(t, 3, nil)
	c.Dial(1, "bob")
	rc := dialRaw(t, c, 0, "alice")
	frames := []string{
		`{"type":"send","id":"%s","to":"bob","body":"hi"}`,        // delivered, on another node
		`{"type":"send","id":"%s","to":"nobody","body":"hi"}`,     // offline
		`{"type":"join","id":"%s","room":"lobby"}`,                // ok
		`{"type":"send","id":"%s","room":"lobby","body":"hi"}`,    // sent
		`{"type":"send","id":"%s","room":"elsewhere","body":"x"}`, // not_member
		`{"type":"leave","id":"%s","room":"lobby"}`,               // ok
		`{"type":"ping","id":"%s"}`,                               // pong
		`{"type":"warp","id":"%s"}`,                               // bad_request
		`{"type":"send","id":"%s","to":"bob"}`,                    // bad_request
		`{"type":"typing","id":"%s","to":"bob"}`,                  // ok, forwarded or dropped
		`{"type":"watch","id":"%s","users":["bob","carol"]}`,      // ok, then presence
		`{"type":"unwatch","id":"%s","users":["carol"]}`,          // ok
	}
	want := map[string]int{}
	for i := 0; i < 150; i++ {
		id := fmt.Sprintf("f%d", i)
		want[id] = 0
		rc.write(websocket.TextMessage, fmt.Sprintf(frames[i%len(frames)], id))
	}
	answered := 0
	count := func(f map[string]any) {
		id, _ := f["id"].(string)
		if _, ok := want[id]; !ok {
			t.Fatalf("answer %v carries an id that was never sent", f)
		}
		if want[id] == 0 {
			answered++
		}
		want[id]++
	}
	// Messages and presence are not answers.
	notAnswer := func(f map[string]any) bool {
		return f["type"] == protocol.TypeMsg || f["type"] == protocol.TypePresence
	}
	for answered < len(want) {
		if f := rc.read(); !notAnswer(f) {
			count(f)
		}
	}
	// Every id has its answer; a ping round trip flushes any second one.
	rc.write(websocket.TextMessage, `{"type":"ping","id":"last"}`)
	for {
		f := rc.read()
		if notAnswer(f) {
			continue
		}
		if f["id"] == "last" {
			break
		}
		count(f)
	}
	for id, n := range want {
		if n != 1 {
			t.Errorf("frame %s was answered %d times, want exactly once", id, n)
		}
	}
}

// The welcome carries the node's --max-frame, and the Go client refuses a
// frame larger than that before sending it: the caller gets a clear error
// and keeps the connection, where the node would have closed it (1009).
func TestClientRefusesAFrameLargerThanItsNodeTakes(t *testing.T) {
	const limit = 1024
	c := testcluster.Start(t, 2, func(i int, cfg *node.Config) {
		if i == 0 {
			cfg.Session.MaxFrame = limit
		}
	})
	alice := c.Dial(0, "alice")
	bob := c.Dial(1, "bob")
	if got := alice.Welcome().MaxFrame; got != limit {
		t.Fatalf("welcome max_frame %d, want the node's %d", got, limit)
	}
	if got := bob.Welcome().MaxFrame; got != session.DefaultMaxFrame {
		t.Fatalf("welcome max_frame %d, want the default %d", got, session.DefaultMaxFrame)
	}

	// A frame of exactly the limit is the node's to take.
	edge := client.Frame{Type: protocol.TypeSend, ID: "edge", To: "bob", Key: "k-edge", Body: "a"}
	encoded, _ := json.Marshal(edge)
	edge.Body = strings.Repeat("a", limit-len(encoded)+1)
	answer := make(chan error, 1)
	if err := alice.SendAsync(edge, func(a client.Ack, err error) {
		if err == nil && a.Status != protocol.StatusDelivered {
			err = fmt.Errorf("status %s", a.Status)
		}
		answer <- err
	}); err != nil {
		t.Fatalf("a frame of exactly --max-frame: %v", err)
	}
	select {
	case err := <-answer:
		if err != nil {
			t.Fatalf("a frame of exactly --max-frame: %v, want delivered", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer to a frame of exactly --max-frame")
	}
	if m := recvMsg(t, bob, "bob"); len(m.Body) != len(edge.Body) {
		t.Fatalf("bob got %d bytes, want %d", len(m.Body), len(edge.Body))
	}

	// One byte more is refused, by SendAsync and by Send, and nothing goes.
	edge.ID, edge.Body = "over", edge.Body+"a"
	if err := alice.SendAsync(edge, nil); !errors.Is(err, client.ErrFrameTooLarge) {
		t.Fatalf("SendAsync one byte over the limit: %v, want ErrFrameTooLarge", err)
	}
	if _, err := alice.Send(ctxFor(t), "bob", strings.Repeat("a", 2*limit)); !errors.Is(err, client.ErrFrameTooLarge) {
		t.Fatalf("Send over the limit: %v, want ErrFrameTooLarge", err)
	}
	// The connection stayed, and the next message goes through on it.
	sendOK(t, alice, "bob", "small", protocol.StatusDelivered)
	if m := recvMsg(t, bob, "bob"); m.Body != "small" {
		t.Fatalf("bob got %.40q, want the small message", m.Body)
	}
	if d, ok := alice.LastDisconnect(); ok {
		t.Fatalf("alice's connection ended: %+v", d)
	}
	if got := c.Counter(0, "shard_connections_closed_total", "reason=frame_too_large"); got != 0 {
		t.Fatalf("%v connections closed for a large frame, want 0", got)
	}
}
