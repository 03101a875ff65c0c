package router

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The node-to-node frame: a 4-byte big-endian length, then the body:
//
//	kind (1 byte) | request id (uvarint) | payload
//
// A request id of 0 marks a one-way message. A reply carries the id of its
// request. Payload fields are uvarint-length-prefixed strings and uvarints.
type kind byte

const (
	kindHello      kind = 1 // first frame on a link: who is dialing
	kindReply      kind = 2 // the answer to a request
	kindForward    kind = 3 // deliver one chat message to local connections
	kindLookup     kind = 4 // where are a key's connections (asked of its owner)
	kindRegister   kind = 5 // this node now holds these counts for these keys
	kindInvalidate kind = 6 // drop cached locations of these keys
	kindSynced     kind = 7 // this node has re-registered for this ring version
	kindResync     kind = 8 // register again what you hold that I own (I dropped it)
)

// String is the `kind` label of the peer message metrics.
func (k kind) String() string {
	switch k {
	case kindHello:
		return "hello"
	case kindReply:
		return "reply"
	case kindForward:
		return "forward"
	case kindLookup:
		return "lookup"
	case kindRegister:
		return "register"
	case kindInvalidate:
		return "invalidate"
	case kindSynced:
		return "synced"
	case kindResync:
		return "resync"
	}
	return fmt.Sprintf("kind%d", byte(k))
}

// linkVersion is checked in the hello; a peer speaking another is refused.
const linkVersion = 1

// maxLinkFrame bounds one node-to-node frame: a chat message is bounded by
// --max-frame (64 KiB by default) and a register batch by registerBatch.
const maxLinkFrame = 4 << 20

var errMalformed = errors.New("malformed node-to-node frame")

// decoder reads fields from a payload; the first error sticks, so a caller
// checks once at the end.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errMalformed
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errMalformed
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string { return string(d.bytes()) }

// count reads a list length and refuses one that cannot fit in what is
// left, so that a hostile peer cannot make us allocate for a huge list.
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.err = errMalformed
		return 0
	}
	return int(n)
}

func (d *decoder) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = errMalformed
	}
	return d.err
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendStr(b []byte, v string) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// Forward payloads.
const (
	forwardDirect byte = 1 // to and from: deliver to both users' connections
	forwardRoom   byte = 2 // room: deliver to the room's joined connections
)

// forward is one chat message on its way to one node.
type forward struct {
	mode  byte
	a, b  string // direct: to, from; room: room, sender user
	frame []byte // the encoded `msg` frame, written as is to each connection
	// copy is the frame for the sender's other devices when it differs
	// from frame (with a store, each inbox has its own offset); empty: the
	// same frame.
	copy []byte
	seq  int64 // room: the message's offset in the room's stream (0: none)
}

func (f *forward) append(b []byte) []byte {
	b = append(b, f.mode)
	b = appendStr(b, f.a)
	b = appendStr(b, f.b)
	b = appendBytes(b, f.frame)
	if sameBytes(f.copy, f.frame) {
		b = appendBytes(b, nil) // the receiver takes frame for both
	} else {
		b = appendBytes(b, f.copy)
	}
	return binary.AppendUvarint(b, uint64(f.seq))
}

func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

func decodeForward(p []byte) (forward, error) {
	d := decoder{b: p}
	var f forward
	if len(p) == 0 {
		return f, errMalformed
	}
	f.mode = p[0]
	d.b = p[1:]
	f.a = d.string()
	f.b = d.string()
	f.frame = d.bytes()
	f.copy = d.bytes()
	f.seq = int64(d.uvarint())
	if err := d.done(); err != nil {
		return f, err
	}
	if f.mode != forwardDirect && f.mode != forwardRoom {
		return f, errMalformed
	}
	if len(f.copy) == 0 {
		f.copy = f.frame
	}
	return f, nil
}

// Location is how many connections of a key one node holds.
type Location struct {
	Node  string
	Count int
}

// Lookup reply statuses.
const (
	lookupKnown     byte = 0 // the owner's directory answers for this key
	lookupUnsettled byte = 1 // the ring just changed and holders are still re-registering
	lookupNotOwner  byte = 2 // the asked node does not own the key on its ring
)

// Lookup request flags.
const lookupWatch byte = 1 // cache the answer: tell me when it changes

func appendLocations(b []byte, status byte, locs []Location) []byte {
	b = append(b, status)
	b = binary.AppendUvarint(b, uint64(len(locs)))
	for _, l := range locs {
		b = appendStr(b, l.Node)
		b = binary.AppendUvarint(b, uint64(l.Count))
	}
	return b
}

func decodeLocations(p []byte) (byte, []Location, error) {
	if len(p) == 0 {
		return 0, nil, errMalformed
	}
	d := decoder{b: p[1:]}
	n := d.count()
	locs := make([]Location, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		locs = append(locs, Location{Node: d.string(), Count: int(d.uvarint())})
	}
	return p[0], locs, d.done()
}

// Key names a directory entry: a user's connections or a room's joined
// connections. Users and rooms are separate namespaces.
type Key struct {
	Room bool
	Name string
}

func (k Key) String() string {
	if k.Room {
		return "room " + k.Name
	}
	return "user " + k.Name
}

func appendKey(b []byte, k Key) []byte {
	if k.Room {
		b = append(b, 'r')
	} else {
		b = append(b, 'u')
	}
	return appendStr(b, k.Name)
}

func (d *decoder) key() Key {
	if d.err != nil || len(d.b) == 0 {
		d.err = errMalformed
		return Key{}
	}
	c := d.b[0]
	d.b = d.b[1:]
	if c != 'u' && c != 'r' {
		d.err = errMalformed
	}
	return Key{Room: c == 'r', Name: d.string()}
}

// registration is this node's count of connections for one key.
type registration struct {
	key   Key
	count int
}

func appendRegistrations(b []byte, regs []registration) []byte {
	b = binary.AppendUvarint(b, uint64(len(regs)))
	for _, r := range regs {
		b = appendKey(b, r.key)
		b = binary.AppendUvarint(b, uint64(r.count))
	}
	return b
}

func decodeRegistrations(p []byte) ([]registration, error) {
	d := decoder{b: p}
	n := d.count()
	regs := make([]registration, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		regs = append(regs, registration{key: d.key(), count: int(d.uvarint())})
	}
	return regs, d.done()
}

func appendKeys(b []byte, keys []Key) []byte {
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendKey(b, k)
	}
	return b
}

func decodeKeys(p []byte) ([]Key, error) {
	d := decoder{b: p}
	n := d.count()
	keys := make([]Key, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		keys = append(keys, d.key())
	}
	return keys, d.done()
}
