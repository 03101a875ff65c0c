// Package ring says which member owns a key, for one fixed set of members, and names that set
// with a version. It must never know about sockets or gossip, and never panic on bad input.
package ring

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// Scheme is how a ring divides the keys among its members: how many partitions, how many
// virtual nodes per member, what load bound. Nodes agree on owners only when they agree on
// the scheme as well as the members, so the scheme is hashed into every Version. A build
// that adds a scheme keeps the older ones: a cluster routes by the newest every member knows
// (the router chooses from what each member announces), so that nodes can be upgraded one at
// a time and the cluster moves to the new scheme once the last old node is gone.
type Scheme uint8

const (
	// Original: 16381 partitions, 100 virtual nodes a member, load 1.25; the ring of builds
	// that announce no scheme.
	Original Scheme = 1
	// Fine: 65521 partitions, 400 virtual nodes, load 1.25. A join of each of 32 joiners of
	// other names moved, as a multiple of 1/(N+1) (node-001... joined by joiner-0...):
	//   N =           3          8          16         64         128        256
	//   Original  0.86-1.18  0.84-1.26  0.84-1.30  0.77-1.17  0.83-1.37  0.75-1.41
	//   Fine      0.92-1.06  0.88-1.08  0.91-1.10  0.85-1.18  0.88-1.12  0.83-1.16
	// (65521 partitions at 200 virtual nodes: 0.83-1.24 at 16; at 300, 0.78-1.18 at 256;
	// 800 is hardly tighter and twice as slow to build). The busiest member owns 1.06x the
	// average at 8 members and 1.11x at 64, against 1.25x (the bound) on Original. It
	// costs 5-10 ms a build at 3-64 members and 30-70 ms at 256 on 2 shared cores, against
	// 1-6 ms, and 128 KiB of owners a ring. A leave spreads the leaver's partitions over
	// many members (every one at 64 members, about 120 of 255 at 256, where the leaver owned
	// about P/N = 256), each of which waits for every member's synced: 31,000 reports at 256
	// nodes against 9,700; a join gives partitions to the newcomer alone.
	Fine Scheme = 2
	// Latest is the scheme this build routes by when every member knows it.
	Latest = Fine
)

// Announced is the scheme a member routes by that announces n as the newest it knows: one
// that announces none (0) is of a build before schemes and routes by Original, and one newer
// than this build knows counts as Latest, since a cluster routes by the oldest its members
// know.
func Announced(n int) Scheme {
	switch {
	case n <= 0:
		return Original
	case n > int(Latest):
		return Latest
	}
	return Scheme(n)
}

// schemeParams are a scheme's constants, as consistent takes them.
type schemeParams struct {
	// partitions, a prime, so that hash%P spreads keys evenly. Bounded loads move more keys
	// on a join than consistent hashing's 1/N when a member holds only a few partitions:
	// at 271 partitions a join to 64 members moved 1.89/N, and 74 of 257 members owned
	// nothing. At most this many members (one partition each; beyond, consistent panics),
	// and at most 65536, since a ring keeps its owners as 16-bit member indexes.
	partitions int
	// replication: virtual nodes per member. Balance depends on it more than on the
	// partitions: for 3->4 members the busiest member held 28.5k of 100k keys at 100 versus
	// 31.3k at 20.
	replication int
	// load: no member owns more than load x the average number of partitions. Tighter
	// (1.1) moves more keys between members that both stayed; looser (2.0) balances worse.
	load float64
}

var schemes = map[Scheme]schemeParams{
	Original: {partitions: 16381, replication: 100, load: 1.25},
	Fine:     {partitions: 65521, replication: 400, load: 1.25},
}

// config is the one place a scheme's constants meet consistent.
func (p schemeParams) config() consistent.Config {
	return consistent.Config{Hasher: hasher{}, PartitionCount: p.partitions, ReplicationFactor: p.replication, Load: p.load}
}

// name is what Version hashes: for Original, what builds before schemes hashed, so that
// they and this one agree on versions while they route alike.
func (p schemeParams) name() string {
	return "consistent v0.10.0 P=" + strconv.Itoa(p.partitions) +
		" RF=" + strconv.Itoa(p.replication) + " L=" + strconv.FormatFloat(p.load, 'g', -1, 64)
}

// Ring maps keys to members. It never changes after New, so it is safe for concurrent use;
// to follow membership, build a new Ring and swap the pointer.
type Ring struct {
	scheme  Scheme
	members []string // sorted
	owners  []uint16 // index in members of each partition's owner; nil when the ring is empty
	version string
}

// New builds the ring of the Latest scheme for a set of member names. Their order does not
// matter. Empty names and duplicates are errors; an empty list gives a valid ring that owns
// nothing.
func New(members []string) (*Ring, error) { return NewScheme(Latest, members) }

// NewScheme is New for scheme s.
func NewScheme(s Scheme, members []string) (*Ring, error) {
	p, ok := schemes[s]
	if !ok {
		return nil, fmt.Errorf("ring: no scheme %d", s)
	}
	sorted := slices.Clone(members)
	slices.Sort(sorted)
	for i, name := range sorted {
		if name == "" {
			return nil, fmt.Errorf("ring: empty member name")
		}
		if i > 0 && sorted[i-1] == name {
			return nil, fmt.Errorf("ring: duplicate member %q", name)
		}
	}
	if len(sorted) > p.partitions {
		// Checked here because consistent takes seconds to build such a ring before it panics.
		return nil, fmt.Errorf("ring: %d members, at most %d (one partition each)", len(sorted), p.partitions)
	}
	if len(sorted) == 0 {
		// consistent.New panics on a non-nil empty list, and has nothing to say anyway.
		return &Ring{scheme: s, members: sorted, version: version(p, sorted)}, nil
	}
	return buildOnce(s, sorted, func() (*Ring, error) {
		owners, err := partitionOwners(sorted, p.config())
		if err != nil {
			return nil, err
		}
		return &Ring{scheme: s, members: sorted, owners: owners, version: version(p, sorted)}, nil
	})
}

// Scheme is the scheme r divides keys by.
func (r *Ring) Scheme() Scheme { return r.scheme }

// Partitions is how many partitions r divides the keys into; each has one owner, so a
// member's share of the ring is the partitions it owns out of these.
func (r *Ring) Partitions() int { return r.scheme.Partitions() }

// Partitions is how many partitions a ring of scheme s divides the keys into; 0 for a
// scheme this build does not know.
func (s Scheme) Partitions() int { return schemes[s].partitions }

// Owner returns the member that owns key, or "" when the ring is empty.
func (r *Ring) Owner(key string) string {
	if len(r.owners) == 0 {
		return ""
	}
	// Same partition as consistent.FindPartitionID (hash % P); TestOwnerMatchesConsistent
	// holds us to it. Sum64String hashes the string in place, so nothing is allocated.
	return r.members[r.owners[xxhash.Sum64String(key)%uint64(len(r.owners))]]
}

// Members returns the member names, sorted. The caller may keep and modify the copy.
func (r *Ring) Members() []string { return slices.Clone(r.members) }

// Len returns the number of members.
func (r *Ring) Len() int { return len(r.members) }

// Has reports whether name is a member.
func (r *Ring) Has(name string) bool {
	_, ok := slices.BinarySearch(r.members, name)
	return ok
}

// Version names the member set: 16 hex digits, equal for equal sets (and equal schemes),
// different for different ones except for a 2^-64 chance of a hash collision.
// The empty ring has a version too. Compare versions to learn whether two nodes route alike.
func (r *Ring) Version() string { return r.version }

func version(p schemeParams, sorted []string) string {
	d := xxhash.New()
	d.WriteString(p.name())
	var n [binary.MaxVarintLen64]byte
	for _, name := range sorted {
		// A length prefix, not a separator, so that no name can forge a boundary:
		// {"a", "b"} and {"a\nb"} hash differently whatever bytes names contain.
		d.Write(binary.AppendUvarint(n[:0], uint64(len(name))))
		d.WriteString(name)
	}
	return fmt.Sprintf("%016x", d.Sum64())
}

// member is a name as consistent sees it: the name plus "/". consistent v0.10.0 names virtual
// node i String()+itoa(i), so "n1" replica 10 and "n11" replica 0 collide and a later Remove
// dereferences nil. After the "/" only the replica number follows, so no two collide. The
// suffix is stored, not appended in String, which consistent calls twice per partition step.
type member string

func newMember(name string) member { return member(name + "/") }

func (m member) String() string { return string(m) }
func (m member) name() string   { return string(m[:len(m)-1]) }

type hasher struct{}

func (hasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }
