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

const (
	// partitionCount 16381, a prime, so hash%P spreads keys evenly. Bounded loads move
	// more keys on a join than consistent hashing's 1/N when a member holds only a few
	// partitions: a join to N members moved, as a multiple of 1/(N+1), mean of 8 member
	// sets (internal/sim's question, measured with consistent v0.10.0 at L=1.25):
	//   N =              8     64    256
	//   P = 271        1.03   1.89   1.42, and 74 of 257 members owned nothing
	//   P = 4093       0.94   1.15   1.48
	//   P = 7919       0.94   1.10   1.19
	//   P = 16381      0.94   1.07   1.12
	// A rebuild (partitionOwners, once per membership change) costs 1.2-1.3 ms at 3-10
	// members, 2.3 ms at 64, 7.3 ms at 256 (median of 11). The owners table is P names:
	// 262 KB a ring.
	// P caps a ring's members: beyond that consistent panics.
	partitionCount = 16381

	// replicationFactor 100: virtual nodes per member. Balance depends on it more than on P:
	// for 3->4 members the busiest member held 28.5k of 100k keys versus 31.3k at RF 20.
	replicationFactor = 100

	// load 1.25: no member owns more than 1.25x the average number of partitions. Tighter
	// (1.1) moves more keys between members that both stayed; looser (2.0) balances worse.
	load = 1.25
)

// scheme is hashed into every Version, so two nodes built with different constants never
// believe they agree on owners just because they agree on members.
var scheme = "consistent v0.10.0 P=" + strconv.Itoa(partitionCount) +
	" RF=" + strconv.Itoa(replicationFactor) + " L=" + strconv.FormatFloat(load, 'g', -1, 64)

// Ring maps keys to members. It never changes after New, so it is safe for concurrent use;
// to follow membership, build a new Ring and swap the pointer.
type Ring struct {
	members []string // sorted
	owners  []string // owner name per partition; nil when the ring is empty
	version string
}

// New builds the ring for a set of member names. Their order does not matter. Empty names and
// duplicates are errors; an empty list gives a valid ring that owns nothing.
func New(members []string) (*Ring, error) {
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
	if len(sorted) > partitionCount {
		// Checked here because consistent takes seconds to build such a ring before it panics.
		return nil, fmt.Errorf("ring: %d members, at most %d (one partition each)", len(sorted), partitionCount)
	}
	if len(sorted) == 0 {
		// consistent.New panics on a non-nil empty list, and has nothing to say anyway.
		return &Ring{members: sorted, version: version(sorted)}, nil
	}
	return buildOnce(sorted, func() (*Ring, error) {
		owners, err := partitionOwners(sorted, config)
		if err != nil {
			return nil, err
		}
		return &Ring{members: sorted, owners: owners, version: version(sorted)}, nil
	})
}

// config is the one place the constants meet consistent.
var config = consistent.Config{
	Hasher:            hasher{},
	PartitionCount:    partitionCount,
	ReplicationFactor: replicationFactor,
	Load:              load,
}

// Owner returns the member that owns key, or "" when the ring is empty.
func (r *Ring) Owner(key string) string {
	if len(r.owners) == 0 {
		return ""
	}
	// Same partition as consistent.FindPartitionID (hash % P); TestOwnerMatchesConsistent
	// holds us to it. Sum64String hashes the string in place, so nothing is allocated.
	return r.owners[xxhash.Sum64String(key)%partitionCount]
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

// Version names the member set: 16 hex digits, equal for equal sets (and equal ring
// constants), different for different ones except for a 2^-64 chance of a hash collision.
// The empty ring has a version too. Compare versions to learn whether two nodes route alike.
func (r *Ring) Version() string { return r.version }

func version(sorted []string) string {
	d := xxhash.New()
	d.WriteString(scheme)
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
