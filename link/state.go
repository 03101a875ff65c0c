package link

import "sort"

// States of PeerState.Dialed.
const (
	// LinkUp: our connection to the peer is connected (its hello, well under
	// a millisecond on one network, may still be under way).
	LinkUp = "up"
	// LinkConnecting: our connection to the peer is being dialed.
	LinkConnecting = "connecting"
	// LinkDown: there is no connection of ours to the peer now: none was
	// needed yet, it closed, or its dial failed. The next request dials.
	LinkDown = "down"
)

// PeerState is this node's side of its links with one peer, as the cluster
// view shows it: a copy, read without disturbing the links.
type PeerState struct {
	Peer string
	// Dialed is the state of our connection to the peer, which carries our
	// requests and its replies: LinkUp, LinkConnecting or LinkDown.
	Dialed string
	// Accepted: the peer's connection to us, which carries its requests and
	// our replies, is open.
	Accepted bool
	// Queued is the frames waiting here to go to the peer, on both
	// connections.
	Queued int
}

// Peers reports the links with every peer this node knows of (SetPeers) or
// holds a connection with, sorted by name.
func (l *Links) Peers() []PeerState {
	l.mu.Lock()
	states := make(map[string]*PeerState, len(l.peers))
	for name := range l.peers {
		states[name] = &PeerState{Peer: name, Dialed: LinkDown}
	}
	dialed := make([]*conn, 0, len(l.out))
	for _, lc := range l.out {
		dialed = append(dialed, lc)
	}
	accepted := make([]*conn, 0, len(l.in))
	for lc := range l.in {
		accepted = append(accepted, lc)
	}
	l.mu.Unlock()

	// Each conn's lock is taken with no other held, as everywhere else.
	for _, lc := range dialed {
		ps := stateOf(states, lc)
		lc.mu.Lock()
		switch {
		case lc.err != nil:
		case lc.nc != nil:
			ps.Dialed = LinkUp
		default:
			ps.Dialed = LinkConnecting
		}
		lc.mu.Unlock()
	}
	for _, lc := range accepted {
		ps := stateOf(states, lc)
		lc.mu.Lock()
		ps.Accepted = ps.Accepted || lc.err == nil
		lc.mu.Unlock()
	}
	out := make([]PeerState, 0, len(states))
	for _, ps := range states {
		out = append(out, *ps)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Peer < out[j].Peer })
	return out
}

// stateOf is the entry of lc's peer, with lc's queued frames counted in.
func stateOf(states map[string]*PeerState, lc *conn) *PeerState {
	ps := states[lc.peer]
	if ps == nil {
		ps = &PeerState{Peer: lc.peer, Dialed: LinkDown}
		states[lc.peer] = ps
	}
	ps.Queued += lc.queued()
	return ps
}
