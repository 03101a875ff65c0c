package node

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Without a cluster key nothing on the node-to-node side is authenticated
// or encrypted: gossip is plain memberlist, and a link is let in on the
// name, incarnation and source address its hello claims. That is safe on
// loopback only, so a node without a key refuses to start on any other
// gossip or link address unless Insecure says the network is trusted.

// exposedAddrs lists those of addrs (host:port, empty ones skipped) that
// are not on loopback. A host name other than localhost counts as exposed:
// it may name any address, now or later.
func exposedAddrs(addrs ...string) []string {
	var exposed []string
	for _, a := range addrs {
		if a != "" && !onLoopback(a) {
			exposed = append(exposed, a)
		}
	}
	return exposed
}

func onLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// checkExposure refuses a keyless node on a non-loopback gossip or link
// address, unless insecure; it returns the addresses to warn about then.
func checkExposure(cfg Config, linkAt string) ([]string, error) {
	if cfg.ClusterKey != "" {
		return nil, nil
	}
	exposed := exposedAddrs(cfg.Gossip, cfg.Advertise, linkAt)
	if len(exposed) > 0 && !cfg.Insecure {
		return nil, fmt.Errorf("no --cluster-key, and %s is not a loopback address: set --cluster-key on every node (or --insecure on a network you trust)",
			strings.Join(exposed, ", "))
	}
	return exposed, nil
}
