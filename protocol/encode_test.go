package protocol

import (
	"encoding/json"
	"strings"
	"testing"
)

// The encoders must produce JSON that decodes back to what went in.
func TestEncodedFramesAreJSON(t *testing.T) {
	body := "quote \" backslash \\ newline \n tab \t ctrl \x01 html <a>&amp; sep \u2028 emoji 😀 bad \xff"
	m := &Msg{Mid: "m1", From: "alice", To: "bob", Body: body, TS: 1732450000123}
	var got struct {
		Type, Mid, From, To, Body string
		TS                        int64
	}
	if err := json.Unmarshal(AppendMsg(nil, m), &got); err != nil {
		t.Fatalf("msg frame is not JSON: %v", err)
	}
	wantBody := strings.ToValidUTF8(body, "\ufffd")
	if got.Type != TypeMsg || got.Body != wantBody || got.TS != m.TS || got.To != "bob" {
		t.Fatalf("msg frame decoded to %+v", got)
	}
	for _, frame := range [][]byte{
		AppendWelcome(nil, &Welcome{User: "alice", Node: "n1"}),
		AppendWelcome(nil, &Welcome{User: "alice", Node: "n1", Store: true, MaxFrame: 65536}),
		AppendAck(nil, "c1", StatusSent, 0),
		AppendAck(nil, "", StatusDelivered, -1),
		AppendPong(nil, "p1"),
		AppendError(nil, "c1", CodeBadRequest, "bad \"thing\""),
	} {
		if !json.Valid(frame) {
			t.Errorf("%s is not JSON", frame)
		}
	}
	var ack map[string]any
	json.Unmarshal(AppendAck(nil, "c2", StatusSent, 0), &ack)
	if ack["recipients"] != 0.0 {
		t.Errorf("room ack %v lacks recipients 0", ack)
	}
}

func BenchmarkEncodeMsg(b *testing.B) {
	m := &Msg{Mid: "0123456789abcdef-1a2b", From: "alice", To: "bob", Body: "hello there, how are you doing today?", TS: 1732450000123}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendMsg(buf[:0], m)
	}
}

func BenchmarkEncodeTyping(b *testing.B) {
	t := &Typing{From: "alice", To: "bob"}
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendTyping(buf[:0], t)
	}
}

func BenchmarkEncodePresence(b *testing.B) {
	p := &Presence{User: "bob", LastSeen: 1732450000123}
	buf := make([]byte, 0, 80)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendPresence(buf[:0], p)
	}
}

// The server frames are byte for byte those of docs/protocol.md §2.6 and §4
// (their fields, in their order, with values of the tests' own), so that
// the names of types, statuses and codes are pinned to the wire here and
// every other test may use the constants.
func TestServerFramesAreAsDocumented(t *testing.T) {
	for _, tc := range []struct {
		got  []byte
		want string
	}{
		{AppendWelcome(nil, &Welcome{User: "alice", Node: "n1", Store: true, MaxFrame: 65536}),
			`{"type":"welcome","user":"alice","node":"n1","store":true,"max_frame":65536}`},
		{AppendMsg(nil, &Msg{Mid: "m1", From: "alice", To: "bob", Body: "hi", TS: 1732450000123}),
			`{"type":"msg","mid":"m1","from":"alice","to":"bob","body":"hi","ts":1732450000123}`},
		{AppendMsg(nil, &Msg{Mid: "m2", From: "alice", Room: "lobby", Body: "hi", TS: 1732450000123, Seq: 9}),
			`{"type":"msg","mid":"m2","from":"alice","room":"lobby","body":"hi","ts":1732450000123,"seq":9}`},
		{AppendAck(nil, "c1", StatusDelivered, -1), `{"type":"ack","id":"c1","status":"delivered"}`},
		{AppendAck(nil, "c1", StatusOffline, -1), `{"type":"ack","id":"c1","status":"offline"}`},
		{AppendAck(nil, "c2", StatusSent, 7), `{"type":"ack","id":"c2","status":"sent","recipients":7}`},
		{AppendAck(nil, "c3", StatusOK, -1), `{"type":"ack","id":"c3","status":"ok"}`},
		{AppendAckFrame(nil, &Ack{ID: "c1", Status: StatusStored, Recipients: -1, Seq: 4, Mid: "m1"}),
			`{"type":"ack","id":"c1","status":"stored","seq":4,"mid":"m1"}`},
		{AppendPong(nil, "c5"), `{"type":"pong","id":"c5"}`},
		// SPEC 8.
		{AppendAckFrame(nil, &Ack{ID: "c5", Status: StatusSent, Recipients: 4, Seq: 13}),
			`{"type":"ack","id":"c5","status":"sent","recipients":4,"seq":13}`},
		{AppendMsg(nil, &Msg{Mid: "m3", From: "alice", Group: "team", Body: "hi", TS: 5, Seq: 13}),
			`{"type":"msg","mid":"m3","from":"alice","group":"team","body":"hi","ts":5,"seq":13}`},
		{AppendMsg(nil, &Msg{Mid: "m4", From: "alice", Group: "team", Event: EventAdded, User: "dave", TS: 5, Seq: 14}),
			`{"type":"msg","mid":"m4","from":"alice","group":"team","event":"added","user":"dave","ts":5,"seq":14}`},
		{AppendReceipt(nil, &Receipt{By: "alice", With: "alice", Seq: 88}), `{"type":"receipt","by":"alice","with":"alice","seq":88}`},
		{AppendReceipt(nil, &Receipt{By: "alice", Group: "team", Seq: 12}), `{"type":"receipt","by":"alice","group":"team","seq":12}`},
		{AppendAckFrame(nil, &Ack{ID: "c9", Status: StatusOK, Recipients: -1, Conversations: []Conversation{
			{With: "bob", Last: 57, Read: 50, Unread: 7, TS: 3}, {Group: "team", Last: 14, Read: 14, TS: 2, Admin: true}}}),
			`{"type":"ack","id":"c9","status":"ok","conversations":[{"with":"bob","last":57,"read":50,"unread":7,"ts":3},{"group":"team","last":14,"read":14,"unread":0,"ts":2,"admin":true}]}`},
		{AppendAckFrame(nil, &Ack{ID: "c9", Status: StatusOK, Recipients: -1, Conversations: []Conversation{
			{Group: "ops", Last: 3, Read: 1, Unread: 2, TS: 4}}}), // §12.6: admin absent but for an admin
			`{"type":"ack","id":"c9","status":"ok","conversations":[{"group":"ops","last":3,"read":1,"unread":2,"ts":4}]}`},
		{AppendAckFrame(nil, &Ack{ID: "c9", Status: StatusOK, Recipients: -1, Conversations: []Conversation{}}),
			`{"type":"ack","id":"c9","status":"ok","conversations":[]}`},
		// Issue 13.
		{AppendTyping(nil, &Typing{From: "alice", To: "bob"}), `{"type":"typing","from":"alice","to":"bob"}`},
		{AppendTyping(nil, &Typing{From: "alice", Room: "lobby"}), `{"type":"typing","from":"alice","room":"lobby"}`},
		{AppendTyping(nil, &Typing{From: "alice", Group: "team"}), `{"type":"typing","from":"alice","group":"team"}`},
		{AppendPresence(nil, &Presence{User: "bob", Online: true}), `{"type":"presence","user":"bob","online":true,"last_seen":0}`},
		{AppendPresence(nil, &Presence{User: "bob", LastSeen: 1732450000123}), `{"type":"presence","user":"bob","online":false,"last_seen":1732450000123}`},
		{AppendError(nil, "c1", CodeNotMember, "join first"), `{"type":"error","id":"c1","code":"not_member","message":"join first"}`},
	} {
		if string(tc.got) != tc.want {
			t.Errorf("encoded %s, docs/protocol.md says %s", tc.got, tc.want)
		}
	}
}
