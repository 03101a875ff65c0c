package session

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/shardchat/shard/protocol"
)

func TestDecodeFrameAcceptsEveryClientFrame(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Frame
	}{
		{`{"type":"send","id":"c1","to":"bob","body":"hi"}`, Frame{Type: "send", ID: "c1", To: "bob", Body: "hi"}},
		{`{"type":"send","id":"c2","room":"lobby","body":"hi"}`, Frame{Type: "send", ID: "c2", Room: "lobby", Body: "hi"}},
		{`{"type":"join","id":"c3","room":"lobby"}`, Frame{Type: "join", ID: "c3", Room: "lobby"}},
		{`{"type":"leave","id":"c4","room":"lobby"}`, Frame{Type: "leave", ID: "c4", Room: "lobby"}},
		{`{"type":"ping","id":"c5"}`, Frame{Type: "ping", ID: "c5"}},
		{`{"type":"ping"}`, Frame{Type: "ping"}},
		{`{"type":"sync","id":"s1","after":41}`, Frame{Type: "sync", ID: "s1", After: 41}},
		{`{"type":"join","id":"j","room":"r","since":0}`, Frame{Type: "join", ID: "j", Room: "r", HasSince: true}},
		{`{"type":"send","to":"b","body":"x","key":"k-1"}`, Frame{Type: "send", To: "b", Body: "x", Key: "k-1"}},
		// Unknown fields are skipped, whatever their shape.
		{` { "x" : [1, {"y": "}"}], "type" : "ping", "z": null, "n": -1.5e3 } `, Frame{Type: "ping"}},
		// Escapes are decoded.
		{`{"type":"send","to":"bob","body":"a\"b\\c\n\u00e9\ud83d\ude00"}`, Frame{Type: "send", To: "bob", Body: "a\"b\\c\né😀"}},
	} {
		got, err := DecodeFrame([]byte(tc.in))
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestValidID(t *testing.T) {
	for _, ok := range []string{"a", "Bob_1.x@y-z", strings.Repeat("a", 64)} {
		if !ValidID(ok) {
			t.Errorf("ValidID(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", strings.Repeat("a", 65), "a b", "é", "a/b", "a\x00"} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
}

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
	if got.Type != "msg" || got.Body != wantBody || got.TS != m.TS || got.To != "bob" {
		t.Fatalf("msg frame decoded to %+v", got)
	}
	for _, frame := range [][]byte{
		AppendWelcome(nil, &Welcome{User: "alice", Node: "n1"}),
		AppendWelcome(nil, &Welcome{User: "alice", Node: "n1", Store: true, MaxFrame: 65536}),
		AppendAck(nil, "c1", protocol.StatusSent, 0),
		AppendAck(nil, "", protocol.StatusDelivered, -1),
		AppendPong(nil, "p1"),
		AppendError(nil, "c1", protocol.CodeBadRequest, "bad \"thing\""),
	} {
		if !json.Valid(frame) {
			t.Errorf("%s is not JSON", frame)
		}
	}
	var ack map[string]any
	json.Unmarshal(AppendAck(nil, "c2", protocol.StatusSent, 0), &ack)
	if ack["recipients"] != 0.0 {
		t.Errorf("room ack %v lacks recipients 0", ack)
	}
}

func FuzzDecodeFrame(f *testing.F) {
	for _, seed := range []string{
		`{"type":"send","id":"c1","to":"bob","body":"hi"}`,
		`{"type":"send","id":"c2","room":"lobby","body":"hi"}`,
		`{"type":"join","id":"c3","room":"lobby"}`,
		`{"type":"ping","id":"c5","extra":[1,{"a":"}"}]}`,
		`{"type":"send","to":"bob","body":"\ud83d\ude00\u00e9\n"}`,
		`{"type":"send","id":7}`,
		"{\"type\":\"send\",\"id\":\"u\",\"body\":\"\xff\"}",
		`[]`, `"x"`, `{`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		fr, ferr := DecodeFrame(p)
		if ferr != nil {
			if ferr.Code != protocol.CodeBadRequest || ferr.Message == "" {
				t.Fatalf("error %+v", ferr)
			}
			if ferr.ID != "" && !ValidID(ferr.ID) {
				t.Fatalf("error echoes a malformed id %q", ferr.ID)
			}
			return
		}
		// What decodes is valid JSON, valid UTF-8, and valid for its type.
		if !json.Valid(p) || !utf8.Valid(p) {
			t.Fatalf("accepted %q", p)
		}
		if fr.ID != "" && !ValidID(fr.ID) {
			t.Fatalf("accepted malformed id %q", fr.ID)
		}
		switch fr.Type {
		case protocol.TypeSend:
			if (fr.To == "") == (fr.Room == "") || fr.Body == "" {
				t.Fatalf("accepted send %+v", fr)
			}
		case protocol.TypeJoin, protocol.TypeLeave:
			if !ValidID(fr.Room) {
				t.Fatalf("accepted %s %+v", fr.Type, fr)
			}
		case protocol.TypePing, protocol.TypeSync:
		default:
			t.Fatalf("accepted type %q", fr.Type)
		}
		// encoding/json agrees on the fields.
		var std struct{ Type, ID, To, Room, Body string }
		if err := json.Unmarshal(p, &std); err == nil {
			if std.Type != fr.Type || std.ID != fr.ID || std.To != fr.To || std.Room != fr.Room || std.Body != fr.Body {
				t.Fatalf("decoded %+v, encoding/json says %+v", fr, std)
			}
		}
	})
}

func BenchmarkDecodeSend(b *testing.B) {
	p := []byte(`{"type":"send","id":"c123","to":"bob","body":"hello there, how are you doing today?"}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if _, err := DecodeFrame(p); err != nil {
			b.Fatal(err)
		}
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

func TestDecodeFrameRefusesBadOffsetsAndKeys(t *testing.T) {
	for _, in := range []string{
		`{"type":"sync","id":"s","after":-1}`,
		`{"type":"sync","id":"s","after":1.5}`,
		`{"type":"sync","id":"s","after":"4"}`,
		`{"type":"sync","id":"s","after":1e3}`,
		`{"type":"sync","id":"s","after":9007199254740992}`,
		`{"type":"join","id":"s","room":"r","since":null}`,
		`{"type":"send","id":"s","to":"b","body":"x","key":"has space"}`,
		`{"type":"send","id":"s","to":"b","body":"x","key":""}`,
	} {
		if _, err := DecodeFrame([]byte(in)); err == nil || err.ID != "s" || err.Code != protocol.CodeBadRequest {
			t.Errorf("%s: %v, want bad_request with id s", in, err)
		}
	}
}
