package link

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Without a cluster key nothing proves who dials, so the acceptor admits
// only what names a current member (SetPeers) with the incarnation that
// member announced, and, where the member's link address names an IP,
// connects from that IP: the dialer binds its connections to its own
// link's IP for that (sourceAddr). This keeps a stray or hostile process
// that merely reaches the port out; it is no defence against one that can
// read the gossip and send from a member's address, which only a key is.

// errNotMember says a keyless hello did not name a current member as it is.
var errNotMember = errors.New("not a current member")

// admit waits until peer is a member with that incarnation, up to deadline
// (a node that joined a moment ago may dial before gossip told us of it),
// and checks that it dials from its member's address.
func (l *Links) admit(peer Peer, remote net.Addr, deadline time.Time) error {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		l.mu.Lock()
		m, ok := l.peers[peer.Name]
		changed := l.changed
		l.mu.Unlock()
		if ok && m.Inc == peer.Inc {
			if !sameHost(m.Addr, remote) {
				return fmt.Errorf("%w: %q dials from %s, its link is at %s", errNotMember, peer.Name, remote, m.Addr)
			}
			return nil
		}
		select {
		case <-changed:
		case <-timer.C:
			if ok {
				return fmt.Errorf("%w: %q is a member with another incarnation", errNotMember, peer.Name)
			}
			return fmt.Errorf("%w: %q", errNotMember, peer.Name)
		case <-l.stop:
			return ErrPeerDown
		}
	}
}

// sameHost says whether remote dials from the IP of addr; true when addr
// names no IP to compare with (a host name, or all interfaces).
func sameHost(addr string, remote net.Addr) bool {
	want, ok := hostIP(addr)
	if !ok {
		return true
	}
	got, ok := hostIP(remote.String())
	return ok && got == want
}

// hostIP is the specific IP of a host:port address, if it names one.
func hostIP(addr string) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || ap.Addr().IsUnspecified() {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

// sourceAddr is what links dial from: the listener's IP when it names one,
// so that the acceptor can tell it is us.
func sourceAddr(listen net.Addr) net.Addr {
	ip, ok := hostIP(listen.String())
	if !ok {
		return nil
	}
	return &net.TCPAddr{IP: ip.AsSlice()}
}
