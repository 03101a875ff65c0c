package router

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"unicode/utf8"

	"github.com/shardchat/shard/link"
	"github.com/shardchat/shard/protocol"
)

func TestPeerPayloadsRoundTrip(t *testing.T) {
	for _, f := range []delivery{
		{target: Key{Name: "bob"}, from: "alice", frame: []byte(`{"type":"msg"}`), copy: []byte(`{"type":"msg","seq":2}`)},
		{target: Key{Room: true, Name: "lobby"}, from: "carol", frame: []byte(`{"type":"msg"}`), seq: 7},
		{target: Key{Room: true, Name: "lobby"}, frame: []byte(`{"type":"typing"}`), ephemeral: true},
		{target: Key{Name: "bob"}, frame: []byte(`{"type":"typing"}`), ephemeral: true},
	} {
		got, err := decodeForward(appendForward(nil, &f))
		if err != nil || got.target != f.target || got.from != f.from || !bytes.Equal(got.frame, f.frame) ||
			!bytes.Equal(got.copy, f.copy) || got.seq != f.seq || got.ephemeral != f.ephemeral {
			t.Fatalf("forward round trip: %+v %v", got, err)
		}
	}
	locs := []Location{{"n1", 2}, {"n3", 1}}
	st, gotLocs, err := decodeLocations(appendLocations(nil, lookupKnown, locs))
	if err != nil || st != lookupKnown || fmt.Sprint(gotLocs) != fmt.Sprint(locs) {
		t.Fatalf("locations round trip: %v %v %v", st, gotLocs, err)
	}
	regs := []registration{{Key{Name: "bob"}, 2}, {Key{Room: true, Name: "lobby"}, 0}, {Key{Watch: true, Name: "bob"}, 3}}
	gotRegs, err := decodeRegistrations(appendRegistrations(nil, regs))
	if err != nil || fmt.Sprint(gotRegs) != fmt.Sprint(regs) {
		t.Fatalf("registrations round trip: %v %v", gotRegs, err)
	}
}

// FuzzPeerFrame feeds arbitrary bytes to everything that parses what a peer
// sends: none may panic, a huge declared length must not allocate, and what
// a forward may carry to clients is valid JSON. The link's hello has its
// own fuzzer (link.FuzzHandshake).
func FuzzPeerFrame(f *testing.F) {
	f.Add(appendForward(nil, &delivery{target: Key{Room: true, Name: "lobby"}, from: "carol", frame: []byte(`{"type":"msg"}`)}))
	f.Add(appendLocations(nil, lookupKnown, []Location{{"n1", 3}}))
	f.Add(appendRegistrations(nil, []registration{{Key{Name: "bob"}, 1}}))
	f.Add(appendKeys(nil, []Key{{Room: true, Name: "lobby"}}))
	f.Add([]byte{0, 0, 0, 5, byte(kindLookup), 1, 0, 'u', 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add(appendPresences(nil, []presenceUpdate{{state: presenceState{Presence: protocol.Presence{User: "bob", Online: true}}}}))
	f.Add(appendKeys(nil, []Key{{Watch: true, Name: "bob"}}))
	f.Add([]byte(`{"type":"msg","mid":"m","from":"a","to":"b","body":"h\u00e9","ts":1,"l":[1.5e3,{"x":null}]}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		decodeForward(p)
		decodeLocations(p)
		decodeRegistrations(p)
		decodeKeys(p)
		decodePresences(p)
		d := link.NewDecoder(p)
		decodeKey(&d)
		d.Done()
		link.ReadFrame(bufio.NewReader(bytes.NewReader(p)), link.MaxFrame)
		// What a forward may hand to clients is valid JSON and UTF-8.
		if carried(p) && (!json.Valid(p) || !utf8.Valid(p)) {
			t.Fatalf("a forward would carry %q to clients", p)
		}
	})
}
