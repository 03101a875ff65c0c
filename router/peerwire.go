package router

import (
	"github.com/shardchat/shard/link"
)

// The node-to-node payloads of a direct message's road, exported for a
// program that speaks for other nodes over real links (bench's synthetic
// peers, internal/fakepeers): it encodes and decodes with the router's own
// code, so it cannot drift from what a node sends and expects.

// The kinds of request a synthetic peer sends or serves, as link kinds.
const (
	KindForward    = link.Kind(kindForward)
	KindLookup     = link.Kind(kindLookup)
	KindRegister   = link.Kind(kindRegister)
	KindInvalidate = link.Kind(kindInvalidate)
	KindSynced     = link.Kind(kindSynced)
	KindResync     = link.Kind(kindResync)
)

// KindName is the name of kind k in the peer message metrics ("forward",
// "lookup", ...).
func KindName(k link.Kind) string { return kind(k).String() }

// AppendDirectForward encodes the forward of a direct message frame (a
// server `msg` frame, protocol.AppendMsg) to user to, from user from.
func AppendDirectForward(b []byte, to, from string, frame []byte) []byte {
	return appendForward(b, &delivery{target: Key{Name: to}, from: from, frame: frame})
}

// ForwardTarget decodes a forward and returns whom it is for: a user, or a
// room when room is set.
func ForwardTarget(p []byte) (name string, room bool, err error) {
	d, err := decodeForward(p)
	return d.target.Name, d.target.Room, err
}

// AppendDelivered encodes the answer to a forward: how many connections
// got it, how many refused it (closing).
func AppendDelivered(b []byte, got, refused int) []byte { return appendDelivered(b, got, refused) }

// DecodeDelivered decodes the answer to a forward.
func DecodeDelivered(p []byte) (got, refused int, err error) { return decodeDelivered(p) }

// AppendLookup encodes a lookup of key at its owner, as a node on ring
// version version asks it; watch asks the owner to tell of changes.
func AppendLookup(b []byte, key Key, version string, watch bool) []byte {
	var flags byte
	if watch {
		flags = lookupWatch
	}
	b = appendKey(append(b, flags), key)
	return link.AppendString(b, version)
}

// DecodeLookup decodes a lookup: the key asked of its owner.
func DecodeLookup(p []byte) (Key, error) {
	d := link.NewDecoder(p)
	d.Byte()
	key := decodeKey(&d)
	_ = d.String() // the asker's ring version
	return key, d.Done()
}

// AppendLookupAnswer encodes an owner's answer that knows where key is.
func AppendLookupAnswer(b []byte, locs []Location) []byte {
	return appendLocations(b, lookupKnown, locs)
}

// DecodeLookupAnswer decodes an owner's answer: the locations, or why there
// are none (ErrUnsettled, ErrNotOwner).
func DecodeLookupAnswer(p []byte) ([]Location, error) {
	status, locs, err := decodeLocations(p)
	if err != nil {
		return nil, err
	}
	locs, _, err = lookupResult{status, locs}.locations()
	return locs, err
}

// Registration is one node's count of connections for one key.
type Registration struct {
	Key   Key
	Count int
}

// AppendRegister encodes a register request: the sender now holds these
// counts.
func AppendRegister(b []byte, regs []Registration) []byte {
	rs := make([]registration, len(regs))
	for i, r := range regs {
		rs[i] = registration{r.Key, r.Count}
	}
	return appendRegistrations(b, rs)
}

// DecodeRegister decodes a register request.
func DecodeRegister(p []byte) ([]Registration, error) {
	rs, err := decodeRegistrations(p)
	regs := make([]Registration, len(rs))
	for i, r := range rs {
		regs[i] = Registration{r.key, r.count}
	}
	return regs, err
}

// AppendSynced encodes the report that the sender has registered
// everything it holds that the owner owns on ring version version.
func AppendSynced(b []byte, version string) []byte { return appendSynced(b, version, "") }

// AppendSyncedAnswer encodes the answer of a node of this build to a synced
// report: one byte, where an older build answers nothing.
func AppendSyncedAnswer(b []byte) []byte { return append(b, syncedHeard) }

// RingVersion is the version a node computes for members: nodes that agree
// on it agree on every owner. A synthetic peer reports it in its synced.
func RingVersion(members []Member) string { return newView(members, nil).version }
