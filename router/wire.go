package router

import (
	"encoding/binary"
	"fmt"

	"github.com/shardchat/shard/link"
)

// Package router's payloads: what each kind of node-to-node request carries,
// encoded with the link's field codec.

// kind is what a node-to-node request asks for. The link carries it as a
// byte; the router gives it its meaning (peer.go: a server per kind).
type kind link.Kind

// The kinds of request. Numbers are on the wire: never reuse one.
const (
	kindForward     = kind(link.FirstRequestKind) + iota // deliver one delivery to local connections (route.go)
	kindLookup                                           // where are a key's connections, asked of its owner (locate.go)
	kindRegister                                         // this node now holds these counts for these keys (local.go)
	kindInvalidate                                       // drop cached locations of these keys (cache.go)
	kindSynced                                           // this node has re-registered for this ring version, moving from that one (settle.go, which has its payload)
	kindResync                                           // register again what you hold that I own: I dropped it (settle.go)
	kindLookupUsers                                      // where are these users' connections, asked of their owner (locate.go)
	kindMembers                                          // who are a group's members at a version, asked of the group's owner (groups.go)
	kindPresence                                         // these users you watch are now online or offline, told by their owner (presence.go)
)

// String is the `kind` label of the peer message metrics.
func (k kind) String() string {
	if pr, ok := peerRequests[k]; ok {
		return pr.name
	}
	return fmt.Sprintf("kind%d", byte(k))
}

var errMalformed = link.ErrMalformed

// Forward payloads: a delivery as it goes to another node.
const (
	forwardDirect byte = 1 // to and from: deliver to both users' connections
	forwardRoom   byte = 2 // room: deliver to the room's joined connections
	forwardUsers  byte = 3 // users: deliver to each one's connections (a group's members here)

	// forwardEphemeral, or'ed into the mode, marks a signal that is not a
	// message (a receipt).
	forwardEphemeral byte = 0x80
)

// appendForward encodes d: mode, target, from, frame, copy (empty when it is
// the frame), seq, and for users the list of them.
func appendForward(b []byte, d *delivery) []byte {
	mode := forwardDirect
	switch {
	case d.users != nil:
		mode = forwardUsers
	case d.target.Room:
		mode = forwardRoom
	}
	if d.ephemeral {
		b = append(b, mode|forwardEphemeral)
	} else {
		b = append(b, mode)
	}
	b = link.AppendString(b, d.target.Name)
	b = link.AppendString(b, d.from)
	b = link.AppendBytes(b, d.frame)
	b = link.AppendBytes(b, d.copy)
	b = binary.AppendUvarint(b, uint64(d.seq))
	if mode == forwardUsers {
		b = binary.AppendUvarint(b, uint64(len(d.users)))
		for _, u := range d.users {
			b = link.AppendString(b, u)
		}
	}
	return b
}

// decodeForward decodes a delivery from another node; it skips no one.
func decodeForward(p []byte) (delivery, error) {
	d := link.NewDecoder(p)
	mode := d.Byte()
	ephemeral := mode&forwardEphemeral != 0
	mode &^= forwardEphemeral
	dl := delivery{target: Key{Room: mode == forwardRoom, Name: d.String()}, from: d.String(), frame: d.Bytes(), ephemeral: ephemeral}
	if c := d.Bytes(); len(c) > 0 {
		dl.copy = c
	}
	dl.seq = int64(d.Uvarint())
	if mode == forwardUsers {
		n := d.Count()
		dl.users = make([]string, 0, n)
		for i := 0; i < n && d.Err() == nil; i++ {
			dl.users = append(dl.users, d.String())
		}
	}
	if err := d.Done(); err != nil {
		return dl, err
	}
	if mode != forwardDirect && mode != forwardRoom && mode != forwardUsers {
		return dl, errMalformed
	}
	return dl, nil
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
	// lookupUnwatched is an empty answer the owner does not watch (it
	// watches too many keys no node holds): right now, not to be cached.
	lookupUnwatched byte = 3
)

// Lookup request flags.
const lookupWatch byte = 1 // cache the answer: tell me when it changes

func appendLocations(b []byte, status byte, locs []Location) []byte {
	b = append(b, status)
	b = binary.AppendUvarint(b, uint64(len(locs)))
	for _, l := range locs {
		b = link.AppendString(b, l.Node)
		b = binary.AppendUvarint(b, uint64(l.Count))
	}
	return b
}

func decodeLocations(p []byte) (byte, []Location, error) {
	d := link.NewDecoder(p)
	r := decodeLookupResult(&d)
	return r.status, r.locs, d.Done()
}

// lookupResult is an owner's answer for one key.
type lookupResult struct {
	status byte
	locs   []Location
}

func decodeLookupResult(d *link.Decoder) lookupResult {
	r := lookupResult{status: d.Byte()}
	n := d.Count()
	r.locs = make([]Location, 0, n)
	for i := 0; i < n && d.Err() == nil; i++ {
		r.locs = append(r.locs, Location{Node: d.String(), Count: int(d.Uvarint())})
	}
	return r
}

// locations is the answer, or why there is none, and whether the owner
// watches it: only such an answer may be cached.
func (r lookupResult) locations() (locs []Location, cacheable bool, err error) {
	switch r.status {
	case lookupKnown:
		return r.locs, true, nil
	case lookupUnwatched:
		return nil, false, nil
	case lookupUnsettled:
		return nil, false, ErrUnsettled
	default:
		return nil, false, ErrNotOwner
	}
}

// decodeLookupResults decodes the answer to a lookup of many keys: a count,
// then each key's answer as appendLocations wrote it.
func decodeLookupResults(p []byte) ([]lookupResult, error) {
	d := link.NewDecoder(p)
	n := d.Count()
	rs := make([]lookupResult, 0, n)
	for i := 0; i < n && d.Err() == nil; i++ {
		rs = append(rs, decodeLookupResult(&d))
	}
	return rs, d.Done()
}

// Key names a directory entry: a user's connections, a room's joined
// connections, or the connections watching a user's presence (Watch; its
// owner is the user's, presence.go). They are separate namespaces; at most
// one of Room and Watch is set.
type Key struct {
	Room  bool
	Watch bool
	Name  string
}

func (k Key) String() string {
	switch {
	case k.Room:
		return "room " + k.Name
	case k.Watch:
		return "watchers of " + k.Name
	}
	return "user " + k.Name
}

func appendKey(b []byte, k Key) []byte {
	switch {
	case k.Room:
		b = append(b, 'r')
	case k.Watch:
		b = append(b, 'w')
	default:
		b = append(b, 'u')
	}
	return link.AppendString(b, k.Name)
}

func decodeKey(d *link.Decoder) Key {
	c := d.Byte()
	if c != 'u' && c != 'r' && c != 'w' {
		d.Fail()
	}
	return Key{Room: c == 'r', Watch: c == 'w', Name: d.String()}
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
	d := link.NewDecoder(p)
	n := d.Count()
	regs := make([]registration, 0, n)
	for i := 0; i < n && d.Err() == nil; i++ {
		regs = append(regs, registration{key: decodeKey(&d), count: int(d.Uvarint())})
	}
	return regs, d.Done()
}

func appendKeys(b []byte, keys []Key) []byte {
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendKey(b, k)
	}
	return b
}

func decodeKeys(p []byte) ([]Key, error) {
	d := link.NewDecoder(p)
	keys := decodeKeyList(&d)
	return keys, d.Done()
}

func decodeKeyList(d *link.Decoder) []Key {
	n := d.Count()
	keys := make([]Key, 0, n)
	for i := 0; i < n && d.Err() == nil; i++ {
		keys = append(keys, decodeKey(d))
	}
	return keys
}
