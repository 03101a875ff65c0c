package router

// What the router holds, read without asking anyone: the simulation of a
// cluster (internal/sim) checks it against the connections that exist, and
// names the traffic it carries. Nothing here changes the router's state.

// DirectoryEntries returns every key this node's directory lists a holder
// of, with its holders sorted by name: those of keys it owns, and for a while
// those of keys it no longer owns (strayGrace). It copies under the lock.
func (r *Router) DirectoryEntries() map[Key][]Location {
	keys := r.dir.Keys(func(Key) bool { return true })
	out := make(map[Key][]Location, len(keys))
	for _, k := range keys {
		if locs := r.dir.Holders(k); len(locs) > 0 {
			out[k] = locs
		}
	}
	return out
}

// NewDirectory is an owner's directory on its own, watched by nothing: for
// measuring what a key costs at its owner.
func NewDirectory() *Directory { return newDirectory(nil) }
