package protocol

import (
	"encoding/json"
	"slices"
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
		// Groups and read state (SPEC 8).
		{`{"type":"group_create","id":"c1","group":"team","members":["bob","carol"]}`,
			Frame{Type: TypeGroupCreate, ID: "c1", Group: "team", List: `["bob","carol"]`}},
		{`{"type":"group_create","id":"c1","group":"team"}`, Frame{Type: TypeGroupCreate, ID: "c1", Group: "team"}},
		{`{"type":"group_add","id":"c2","group":"team","user":"dave"}`, Frame{Type: TypeGroupAdd, ID: "c2", Group: "team", User: "dave"}},
		{`{"type":"group_remove","id":"c3","group":"team","user":"dave"}`, Frame{Type: TypeGroupRemove, ID: "c3", Group: "team", User: "dave"}},
		{`{"type":"group_leave","id":"c4","group":"team"}`, Frame{Type: TypeGroupLeave, ID: "c4", Group: "team"}},
		{`{"type":"send","id":"c5","group":"team","body":"hi"}`, Frame{Type: TypeSend, ID: "c5", Group: "team", Body: "hi"}},
		{`{"type":"sync","id":"c6","group":"team","after":41}`, Frame{Type: TypeSync, ID: "c6", Group: "team", After: 41}},
		{`{"type":"read","id":"c7","with":"bob","seq":57}`, Frame{Type: TypeRead, ID: "c7", With: "bob", Seq: 57}},
		{`{"type":"read","id":"c8","group":"team","seq":12}`, Frame{Type: TypeRead, ID: "c8", Group: "team", Seq: 12}},
		{`{"type":"conversations","id":"c9"}`, Frame{Type: TypeConversations, ID: "c9"}},
		// Typing and presence (issue 13).
		{`{"type":"typing","to":"bob"}`, Frame{Type: TypeTyping, To: "bob"}},
		{`{"type":"typing","id":"t1","room":"lobby"}`, Frame{Type: TypeTyping, ID: "t1", Room: "lobby"}},
		{`{"type":"typing","group":"team"}`, Frame{Type: TypeTyping, Group: "team"}},
		{`{"type":"watch","id":"c1","users":["bob","carol"]}`, Frame{Type: TypeWatch, ID: "c1", Users: `["bob","carol"]`}},
		{`{"type":"unwatch","id":"c2","users":[ "bob" ]}`, Frame{Type: TypeUnwatch, ID: "c2", Users: `[ "bob" ]`}},
		{`{"type":"ping","users":["bob"]}`, Frame{Type: TypePing}},
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
		`{"type":"group_create","id":"c1","group":"team","members":["bob","carol"]}`,
		`{"type":"read","id":"c7","with":"bob","seq":57}`,
		`{"type":"send","id":"c5","group":"team","body":"hi"}`,
		`{"type":"typing","id":"t","group":"team"}`,
		`{"type":"watch","id":"w","users":["bob","carol",3]}`,
		`{"type":"unwatch","id":"w","users":[ "bob" , "carol"]}`,
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
		named := func(ids ...string) (n int) {
			for _, id := range ids {
				if id != "" {
					if !ValidID(id) {
						t.Fatalf("accepted malformed name %q in %+v", id, fr)
					}
					n++
				}
			}
			return n
		}
		switch fr.Type {
		case TypeSend:
			if named(fr.To, fr.Room, fr.Group) != 1 || fr.Body == "" {
				t.Fatalf("accepted send %+v", fr)
			}
		case TypeJoin, TypeLeave:
			if named(fr.Room) != 1 {
				t.Fatalf("accepted %s %+v", fr.Type, fr)
			}
		case TypeGroupCreate, TypeGroupLeave:
			if named(fr.Group) != 1 || len(fr.Items()) > MaxListLen || named(fr.Items()...) != len(fr.Items()) {
				t.Fatalf("accepted %s %+v", fr.Type, fr)
			}
		case TypeGroupAdd, TypeGroupRemove:
			if named(fr.Group) != 1 || named(fr.User) != 1 {
				t.Fatalf("accepted %s %+v", fr.Type, fr)
			}
		case TypeRead:
			if named(fr.With, fr.Group) != 1 {
				t.Fatalf("accepted read %+v", fr)
			}
		case TypeTyping:
			if named(fr.To, fr.Room, fr.Group) != 1 {
				t.Fatalf("accepted typing %+v", fr)
			}
		case TypeWatch, TypeUnwatch:
			if users := fr.UserItems(); len(users) == 0 || len(users) > MaxListLen || named(users...) != len(users) {
				t.Fatalf("accepted %s %+v", fr.Type, fr)
			}
		case TypePing, TypeSync, TypeConversations:
		default:
			t.Fatalf("accepted type %q", fr.Type)
		}
		// encoding/json agrees on the fields.
		var std struct {
			Type, ID, To, Room, Group, User, With, Body string
			Members                                     []string
		}
		if err := json.Unmarshal(p, &std); err == nil {
			if std.Type != fr.Type || std.ID != fr.ID || std.To != fr.To || std.Room != fr.Room || std.Body != fr.Body ||
				std.Group != fr.Group || std.User != fr.User || std.With != fr.With ||
				(fr.List != "" && !slices.Equal(std.Members, fr.Items())) {
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

func TestFrameItemsAreTheListsIDs(t *testing.T) {
	f, err := DecodeFrame([]byte(`{"type":"group_create","id":"c","group":"g","members":[ "bob" , "carol","d\u0061ve" ]}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Items(); len(got) != 3 || got[0] != "bob" || got[1] != "carol" || got[2] != "dave" {
		t.Fatalf("items %q", got)
	}
	if got := (&Frame{}).Items(); got != nil {
		t.Fatalf("items of no list %q", got)
	}
}

func TestDecodeFrameRefusesMalformedGroupFrames(t *testing.T) {
	tooMany := `{"type":"group_create","id":"s","group":"g","members":["u0"` + strings.Repeat(`,"u"`, MaxListLen) + `]}`
	for _, in := range []string{
		`{"type":"send","id":"s","group":"team","room":"r","body":"x"}`,
		`{"type":"send","id":"s","group":"has space","body":"x"}`,
		`{"type":"send","id":"s","group":"","body":"x"}`,
		`{"type":"group_create","id":"s"}`,
		`{"type":"group_create","id":"s","group":"g","members":"bob"}`,
		`{"type":"group_create","id":"s","group":"g","members":["bob",7]}`,
		`{"type":"group_create","id":"s","group":"g","members":["bad id"]}`,
		tooMany,
		`{"type":"group_add","id":"s","group":"g"}`,
		`{"type":"group_remove","id":"s","group":"g","user":""}`,
		`{"type":"group_leave","id":"s","group":"a b"}`,
		`{"type":"read","id":"s","with":"bob"}`,
		`{"type":"read","id":"s","seq":3}`,
		`{"type":"read","id":"s","with":"bob","group":"g","seq":3}`,
		`{"type":"read","id":"s","group":"g","seq":-3}`,
		`{"type":"sync","id":"s","group":"a b"}`,
	} {
		if _, err := DecodeFrame([]byte(in)); err == nil || err.ID != "s" || err.Code != CodeBadRequest {
			t.Errorf("%.80s: %v, want bad_request with id s", in, err)
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
	many := `"u"` + strings.Repeat(`,"u"`, MaxListLen)
	for _, in := range []string{
		`{"type":"typing","id":"s"}`,
		`{"type":"typing","id":"s","to":"bob","room":"lobby"}`,
		`{"type":"typing","id":"s","room":"lobby","group":"team"}`,
		`{"type":"typing","id":"s","group":""}`,
		`{"type":"typing","id":"s","group":7}`,
		`{"type":"typing","id":"s","to":"b o b"}`,
		`{"type":"watch","id":"s"}`,
		`{"type":"watch","id":"s","users":[]}`,
		`{"type":"watch","id":"s","users":[ ]}`,
		`{"type":"watch","id":"s","users":"bob"}`,
		`{"type":"watch","id":"s","users":7}`,
		`{"type":"watch","id":"s","users":["bob",7]}`,
		`{"type":"watch","id":"s","users":["bob",""]}`,
		`{"type":"unwatch","id":"s","users":["bob","has space"]}`,
		`{"type":"watch","id":"s","users":[` + many + `]}`,
	} {
		if _, err := DecodeFrame([]byte(in)); err == nil || err.ID != "s" || err.Code != CodeBadRequest {
			t.Errorf("%.80s: %v, want bad_request with id s", in, err)
		}
	}
	f, err := DecodeFrame([]byte(`{"type":"watch","users":["bob", "carol" ,"dave"]}`))
	if err != nil || !slices.Equal(f.UserItems(), []string{"bob", "carol", "dave"}) {
		t.Fatalf("users %v (%v), want bob, carol, dave", f.UserItems(), err)
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

// A watch of 100 users is checked, not listed: decoding allocates nothing
// (UserItems, which the router calls once, does).
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
