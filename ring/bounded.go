package ring

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/buraksezer/consistent"
)

// partitionOwners gives every partition its owner exactly as consistent v0.10.0's bounded
// loads do (consistent.New, then GetPartitionOwner; TestOwnersMatchConsistent holds it to
// that), so that Owner is a hash and an index, and New does not pay for consistent's way of
// building: it sorts all virtual nodes again for each member it adds, which at 256 members
// took 318 ms a build (median of 11, 2 shared cores); one sort here. It reports what
// consistent panics on as an error. Each owner is an index in names.
func partitionOwners(names []string, cfg consistent.Config) ([]uint16, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("ring: no members")
	}
	if len(names) > math.MaxUint16+1 {
		return nil, fmt.Errorf("ring: %d members, at most %d", len(names), math.MaxUint16+1)
	}
	// The virtual nodes: consistent names replica i of a member String()+itoa(i), and where
	// two hash alike the member added later holds the point (its ring is a map by hash),
	// while both stay in the sorted set.
	points := make([]uint64, 0, len(names)*cfg.ReplicationFactor)
	holder := make(map[uint64]int, len(names)*cfg.ReplicationFactor)
	var buf []byte
	for i, name := range names {
		m := newMember(name)
		for r := range cfg.ReplicationFactor {
			buf = strconv.AppendInt(append(buf[:0], m...), int64(r), 10)
			h := cfg.Hasher.Sum64(buf)
			holder[h] = i
			points = append(points, h)
		}
	}
	slices.Sort(points)
	// No member holds more than this many partitions: consistent's averageLoad, whose
	// integer division is part of the arithmetic.
	most := math.Ceil(float64(cfg.PartitionCount/len(names)) * cfg.Load)
	loads := make([]float64, len(names))
	owners := make([]uint16, cfg.PartitionCount)
	var key [8]byte
	for id := range owners {
		binary.LittleEndian.PutUint64(key[:], uint64(id))
		idx, _ := slices.BinarySearch(points, cfg.Hasher.Sum64(key[:]))
		// From the first point at or after the partition's hash, clockwise, the first
		// member with room takes it; consistent gives up after len(points)-1 points.
		for tried := 1; ; tried++ {
			if tried >= len(points) {
				return nil, fmt.Errorf("ring: %d members cannot hold %d partitions (at most %g each)", len(names), cfg.PartitionCount, most)
			}
			if idx >= len(points) {
				idx = 0
			}
			if m := holder[points[idx]]; loads[m]+1 <= most {
				owners[id] = uint16(m)
				loads[m]++
				break
			}
			idx++
		}
	}
	return owners, nil
}
