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
