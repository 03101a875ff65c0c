package ring

import "slices"

// Share is how many partitions name owns in this ring: 0 for a name that is
// not a member, and for every name in the empty ring. The shares of all
// members add up to r.Partitions().
func (r *Ring) Share(name string) int {
	i, ok := slices.BinarySearch(r.members, name)
	if !ok {
		return 0
	}
	n := 0
	for _, owner := range r.owners {
		if int(owner) == i {
			n++
		}
	}
	return n
}

// Gainers are the members of r that own a partition in r they did not own in
// old, sorted: after a membership change from old to r, the only members
// whose directories lack keys they own (every member of r when old is the
// empty ring, or divides keys by another scheme). A member that only lost
// partitions still holds every entry for what it owns.
func (r *Ring) Gainers(old *Ring) []string {
	if len(old.owners) == 0 || old.scheme != r.scheme {
		return r.Members()
	}
	gained := make([]bool, len(r.members))
	r.eachMoved(old, func(owner uint16) { gained[owner] = true })
	var out []string
	for i, m := range r.members {
		if gained[i] {
			out = append(out, m)
		}
	}
	return out
}

// Moved is the share of the keys whose owner differs between old and r: the
// partitions that changed owner, out of all (every key when the two divide
// keys by different schemes, or one of them alone is empty).
func (r *Ring) Moved(old *Ring) float64 {
	if len(old.owners) == 0 && len(r.owners) == 0 {
		return 0
	}
	if len(old.owners) == 0 || len(r.owners) == 0 || old.scheme != r.scheme {
		return 1
	}
	moved := 0
	r.eachMoved(old, func(uint16) { moved++ })
	return float64(moved) / float64(len(r.owners))
}

// eachMoved calls moved with the new owner of each partition of r that old,
// a non-empty ring of the same scheme, gave another member.
func (r *Ring) eachMoved(old *Ring, moved func(owner uint16)) {
	// old's member indexes as r's, -1 for one r lacks: an index compare per
	// partition, not a name compare.
	same := make([]int, len(old.members))
	for i, m := range old.members {
		if j, ok := slices.BinarySearch(r.members, m); ok {
			same[i] = j
		} else {
			same[i] = -1
		}
	}
	for p, owner := range r.owners {
		if same[old.owners[p]] != int(owner) {
			moved(owner)
		}
	}
}
