package node

import (
	"bytes"
	"fmt"
	"net/netip"

	"github.com/valyala/fasthttp"
)

// parseTrustedProxies reads --trusted-proxies: CIDRs, or single addresses.
func parseTrustedProxies(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: not a CIDR or an address", s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// clientAddr is what a connection counts against --max-conns-per-ip: the
// peer's address or, when the peer is a trusted proxy, the last address of
// X-Forwarded-For that is not one (each proxy appends the address it was
// reached from; what lies left of the first proxy is the client's word). An
// IPv6 address counts as its /64, which one host is usually given whole.
func (n *Node) clientAddr(ctx *fasthttp.RequestCtx) netip.Prefix {
	peer, _ := netip.AddrFromSlice(ctx.RemoteIP())
	client := peer.Unmap()
	if n.trusted(client) {
		hops := bytes.Join(ctx.Request.Header.PeekAll("X-Forwarded-For"), []byte{','})
		for len(hops) > 0 {
			i := bytes.LastIndexByte(hops, ',')
			hop := bytes.TrimSpace(hops[i+1:])
			hops = hops[:max(i, 0)]
			a, err := netip.ParseAddr(string(hop))
			if err != nil {
				break // not written by a proxy of ours: the hop after it is the client
			}
			client = a.Unmap()
			if !n.trusted(client) {
				break
			}
		}
	}
	if client.Is6() {
		p, _ := client.Prefix(64)
		return p
	}
	return netip.PrefixFrom(client, client.BitLen())
}

func (n *Node) trusted(a netip.Addr) bool {
	for _, p := range n.trustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
