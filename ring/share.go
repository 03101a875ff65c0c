package ring

// Partitions is how many partitions every ring divides the keys into; each
// has one owner, so a member's share of the ring is the partitions it owns
// out of these.
const Partitions = partitionCount

// Share is how many partitions name owns in this ring: 0 for a name that is
// not a member, and for every name in the empty ring. The shares of all
// members add up to Partitions.
func (r *Ring) Share(name string) int {
	n := 0
	for _, owner := range r.owners {
		if owner == name {
			n++
		}
	}
	return n
}

// Gainers are the members of r that own a partition in r they did not own in
// old, sorted: after a membership change from old to r, the only members
// whose directories lack keys they own (every member of r when old is the
// empty ring). A member that only lost partitions still holds every entry for
// what it owns.
func (r *Ring) Gainers(old *Ring) []string {
	gained := make(map[string]bool)
	for p, owner := range r.owners {
		if len(old.owners) == 0 || old.owners[p] != owner {
			gained[owner] = true
		}
	}
	out := make([]string, 0, len(gained))
	for _, m := range r.members {
		if gained[m] {
			out = append(out, m)
		}
	}
	return out
}
