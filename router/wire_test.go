package router

import (
	"bufio"
	"bytes"
	"fmt"
	"testing"

	"github.com/shardchat/shard/link"
)

func TestPeerPayloadsRoundTrip(t *testing.T) {
	f := forward{mode: forwardDirect, a: "bob", b: "alice", frame: []byte(`{"type":"msg"}`)}
	got, err := decodeForward(f.append(nil))
	if err != nil || got.a != f.a || got.b != f.b || !bytes.Equal(got.frame, f.frame) || got.mode != f.mode {
		t.Fatalf("forward round trip: %+v %v", got, err)
	}
	locs := []Location{{"n1", 2}, {"n3", 1}}
	st, gotLocs, err := decodeLocations(appendLocations(nil, lookupKnown, locs))
	if err != nil || st != lookupKnown || fmt.Sprint(gotLocs) != fmt.Sprint(locs) {
		t.Fatalf("locations round trip: %v %v %v", st, gotLocs, err)
	}
	regs := []registration{{Key{Name: "bob"}, 2}, {Key{Room: true, Name: "lobby"}, 0}}
	gotRegs, err := decodeRegistrations(appendRegistrations(nil, regs))
	if err != nil || fmt.Sprint(gotRegs) != fmt.Sprint(regs) {
		t.Fatalf("registrations round trip: %v %v", gotRegs, err)
	}
}

// FuzzPeerFrame feeds arbitrary bytes to everything that parses what a peer
// sends: none may panic, and a huge declared length must not allocate.
func FuzzPeerFrame(f *testing.F) {
	fw := forward{mode: forwardRoom, a: "lobby", b: "carol", frame: []byte(`{"type":"msg"}`)}
	f.Add(fw.append(nil))
	f.Add(appendLocations(nil, lookupKnown, []Location{{"n1", 3}}))
	f.Add(appendRegistrations(nil, []registration{{Key{Name: "bob"}, 1}}))
	f.Add(appendKeys(nil, []Key{{Room: true, Name: "lobby"}}))
	f.Add([]byte{0, 0, 0, 5, byte(kindLookup), 1, 0, 'u', 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, p []byte) {
		decodeForward(p)
		decodeLocations(p)
		decodeRegistrations(p)
		decodeKeys(p)
		d := link.NewDecoder(p)
		decodeKey(&d)
		d.Done()
		link.ReadFrame(bufio.NewReader(bytes.NewReader(p)), link.MaxFrame)
	})
}
