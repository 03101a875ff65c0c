package protocol

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestServerFrameTypeAcceptsWhatTheEncoderWrites(t *testing.T) {
	for _, tc := range []struct {
		typ   string
		frame []byte
	}{
		{TypeMsg, AppendMsg(nil, &Msg{Mid: "m1", From: "alice", To: "bob", Body: "h\u00e9\"\\\n\x01<&> \u2028 \U0001F600", TS: 1, Seq: 3})},
		{TypeMsg, AppendMsg(nil, &Msg{Mid: "m2", From: "alice", Room: "lobby", Body: "hi", TS: -5})},
		{TypeWelcome, AppendWelcome(nil, &Welcome{User: "bob", Node: "n1", Store: true, MaxFrame: 65536})},
		{TypeAck, AppendAckFrame(nil, &Ack{ID: "c1", Status: StatusSent, Recipients: 2, Seq: 9, Mid: "m", Last: 9, More: true, Page: true})},
		{TypePong, AppendPong(nil, "c5")},
		{TypeError, AppendError(nil, "c6", CodeBadRequest, "no")},
		{"presence", []byte(`{"type":"presence","users":["a","b"],"at":{"n":[1.5e-3,0,-0,true,false,null,{}]},"e":[]}`)},
	} {
		got, ok := ServerFrameType(tc.frame)
		if !ok || got != tc.typ {
			t.Errorf("%s: ServerFrameType(%s) = %q %v", tc.typ, tc.frame, got, ok)
		}
	}
}

func TestServerFrameTypeRefusesWhatIsNotAServerFrame(t *testing.T) {
	for _, frame := range []string{
		``, `{`, `[]`, `"msg"`, "raw \x00 bytes",
		`{"type":"msg"`,
		`{"type":"msg"}x`,
		`{"type":"msg"}{"type":"msg"}`,
		`{"from":"bob","type":"msg"}`,
		`{ "type":"msg"}`,
		`{"type":"msg", "body":"x"}`,
		`{"type":""}`,
		`{"type":"m\"sg"}`,
		`{"type":"msg","body":"x",}`,
		`{"type":"msg","body":}`,
		`{"type":"msg","body"}`,
		`{"type":"msg",body:"x"}`,
		`{"type":"msg","body":"unterminated}`,
		"{\"type\":\"msg\",\"body\":\"\xff\"}",
		"{\"type\":\"msg\",\"body\":\"\xed\xa0\x80\"}", // a UTF-8 surrogate
		"{\"type\":\"msg\",\"body\":\"tab\there\"}",
		`{"type":"msg","body":"\x"}`,
		`{"type":"msg","body":"\u12"}`,
		`{"type":"msg","ts":01}`,
		`{"type":"msg","ts":1.}`,
		`{"type":"msg","ts":1e}`,
		`{"type":"msg","ts":-}`,
		`{"type":"msg","ts":+1}`,
		`{"type":"msg","ok":tru}`,
		`{"type":"msg","l":[1,]}`,
		`{"type":"msg","l":[1}`,
		`{"type":"msg","o":{"a":1,}}`,
		`{"type":"msg","d":` + strings.Repeat("[", maxCheckDepth) + strings.Repeat("]", maxCheckDepth) + `}`,
	} {
		if typ, ok := ServerFrameType([]byte(frame)); ok {
			t.Errorf("ServerFrameType(%q) = %q, want refused", frame, typ)
		}
	}
}

// msgFrame is a msg frame with a body of about n bytes of mixed text.
func msgFrame(n int) []byte {
	body := strings.Repeat("hello wörld, ", n/14+1)[:n]
	return AppendMsg(nil, &Msg{Mid: "0123456789ABCDEF-12", From: "alice", To: "bob", Body: body, TS: 1700000000000})
}

// BenchmarkServerFrameType checks a msg frame of 137 bytes and one with a
// 64 KiB body, against json.Valid on the same bytes.
func BenchmarkServerFrameType(b *testing.B) {
	for _, size := range []struct {
		name string
		body int
	}{{"137B", 40}, {"64KiB", 64 << 10}} {
		frame := msgFrame(size.body)
		for _, check := range []struct {
			name string
			ok   func([]byte) bool
		}{
			{"scan", func(p []byte) bool { _, ok := ServerFrameType(p); return ok }},
			{"json.Valid", json.Valid},
		} {
			b.Run(size.name+"/"+check.name, func(b *testing.B) {
				b.SetBytes(int64(len(frame)))
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					if !check.ok(frame) {
						b.Fatal("refused")
					}
				}
			})
		}
	}
}
