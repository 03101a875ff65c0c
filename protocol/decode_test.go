package protocol

import (
	"encoding/json"
	"reflect"
	"strings"
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
		{`{"type":"typing","to":"bob"}`, Frame{Type: TypeTyping, To: "bob"}},
		{`{"type":"typing","id":"t1","room":"lobby"}`, Frame{Type: TypeTyping, ID: "t1", Room: "lobby"}},
		{`{"type":"typing","group":"team"}`, Frame{Type: TypeTyping, Group: "team"}},
		{`{"type":"watch","id":"c1","users":["bob","carol"]}`, Frame{Type: TypeWatch, ID: "c1", Users: []string{"bob", "carol"}}},
		{`{"type":"unwatch","id":"c2","users":[ "bob" ]}`, Frame{Type: TypeUnwatch, ID: "c2", Users: []string{"bob"}}},
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
		if !reflect.DeepEqual(got, tc.want) {
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
		`{"type":"typing","id":"t","group":"team"}`,
		`{"type":"watch","id":"w","users":["bob","carol",3]}`,
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
		case TypeTyping:
			named := 0
			for _, n := range []string{fr.To, fr.Room, fr.Group} {
				if n != "" {
					named++
					if !ValidID(n) {
						t.Fatalf("accepted typing %+v", fr)
					}
				}
			}
			if named != 1 {
				t.Fatalf("accepted typing %+v", fr)
			}
		case TypeWatch, TypeUnwatch:
			if len(fr.Users) == 0 || len(fr.Users) > MaxUsersPerFrame {
				t.Fatalf("accepted %s of %d users", fr.Type, len(fr.Users))
			}
			for _, u := range fr.Users {
				if !ValidID(u) {
					t.Fatalf("accepted %s of %q", fr.Type, u)
				}
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

func TestDecodeFrameRefusesBadTypingAndWatches(t *testing.T) {
	many := `"u"` + strings.Repeat(`,"u"`, MaxUsersPerFrame)
	for _, in := range []string{
		`{"type":"typing","id":"s"}`,
		`{"type":"typing","id":"s","to":"bob","room":"lobby"}`,
		`{"type":"typing","id":"s","room":"lobby","group":"team"}`,
		`{"type":"typing","id":"s","group":""}`,
		`{"type":"typing","id":"s","group":7}`,
		`{"type":"typing","id":"s","to":"b o b"}`,
		`{"type":"watch","id":"s"}`,
		`{"type":"watch","id":"s","users":[]}`,
		`{"type":"watch","id":"s","users":"bob"}`,
		`{"type":"watch","id":"s","users":["bob",7]}`,
		`{"type":"watch","id":"s","users":["bob",""]}`,
		`{"type":"unwatch","id":"s","users":["bob","has space"]}`,
		`{"type":"watch","id":"s","users":[` + many + `]}`,
	} {
		if _, err := DecodeFrame([]byte(in)); err == nil || err.ID != "s" || err.Code != CodeBadRequest {
			t.Errorf("%.80s: %v, want bad_request with id s", in, err)
		}
	}
}

func BenchmarkDecodeTyping(b *testing.B) {
	p := []byte(`{"type":"typing","to":"bob"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeFrame(p); err != nil {
			b.Fatal(err)
		}
	}
}

// A watch is not a hot path (once per connection and contact list), but
// its one allocation, the list, is shown here.
func BenchmarkDecodeWatch100(b *testing.B) {
	users := make([]string, 100)
	for i := range users {
		users[i] = `"user` + strings.Repeat("x", i%10) + `"`
	}
	p := []byte(`{"type":"watch","id":"w1","users":[` + strings.Join(users, ",") + `]}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeFrame(p); err != nil {
			b.Fatal(err)
		}
	}
}
