package protocol

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func TestDecodeFrameAcceptsEveryClientFrame(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Frame
	}{
		{`{"type":"send","id":"c1","to":"bob","body":"hi"}`, Frame{Type: TypeSend, ID: "c1", To: "bob", Body: "hi"}},
		{`{"type":"send","id":"c2","room":"lobby","body":"hi"}`, Frame{Type: TypeSend, ID: "c2", Room: "lobby", Body: "hi"}},
		{`{"type":"join","id":"c3","room":"lobby"}`, Frame{Type: TypeJoin, ID: "c3", Room: "lobby"}},
		{`{"type":"leave","id":"c4","room":"lobby"}`, Frame{Type: TypeLeave, ID: "c4", Room: "lobby"}},
		{`{"type":"ping","id":"c5"}`, Frame{Type: TypePing, ID: "c5"}},
		{`{"type":"ping"}`, Frame{Type: TypePing}},
		{`{"type":"sync","id":"s1","after":41}`, Frame{Type: TypeSync, ID: "s1", After: 41}},
		{`{"type":"join","id":"j","room":"r","since":0}`, Frame{Type: TypeJoin, ID: "j", Room: "r", HasSince: true}},
		{`{"type":"send","to":"b","body":"x","key":"k-1"}`, Frame{Type: TypeSend, To: "b", Body: "x", Key: "k-1"}},
		// Unknown fields are skipped, whatever their shape.
		{` { "x" : [1, {"y": "}"}], "type" : "ping", "z": null, "n": -1.5e3 } `, Frame{Type: TypePing}},
		// Escapes are decoded.
		{`{"type":"send","to":"bob","body":"a\"b\\c\n\u00e9\ud83d\ude00"}`, Frame{Type: TypeSend, To: "bob", Body: "a\"b\\c\né😀"}},
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
			if ferr.Code != CodeBadRequest || ferr.Message == "" {
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
		case TypeSend:
			if (fr.To == "") == (fr.Room == "") || fr.Body == "" {
				t.Fatalf("accepted send %+v", fr)
			}
		case TypeJoin, TypeLeave:
			if !ValidID(fr.Room) {
				t.Fatalf("accepted %s %+v", fr.Type, fr)
			}
		case TypePing, TypeSync:
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
		if _, err := DecodeFrame([]byte(in)); err == nil || err.ID != "s" || err.Code != CodeBadRequest {
			t.Errorf("%s: %v, want bad_request with id s", in, err)
		}
	}
}
