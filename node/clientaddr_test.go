package node

import (
	"net"
	"net/netip"
	"testing"

	"github.com/valyala/fasthttp"
)

// The address a connection counts against: an IPv6 client's /64, and
// X-Forwarded-For read from the right through trusted proxies only.
func TestClientAddrCountsIPv6By64AndReadsOnlyTrustedHops(t *testing.T) {
	trusted, err := parseTrustedProxies([]string{"10.0.0.0/8", "2001:db8:ffff::1"})
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{trustedProxies: trusted}
	for _, tc := range []struct {
		peer string
		xff  []string
		want string
	}{
		{"192.0.2.7", nil, "192.0.2.7/32"},
		{"192.0.2.7", []string{"198.51.100.1"}, "192.0.2.7/32"}, // not a proxy of ours
		{"2001:db8:1:2:3:4:5:6", nil, "2001:db8:1:2::/64"},
		{"10.1.2.3", []string{"198.51.100.1"}, "198.51.100.1/32"},
		{"10.1.2.3", []string{"203.0.113.9, 198.51.100.1"}, "198.51.100.1/32"}, // the left is the client's word
		{"10.1.2.3", []string{"203.0.113.9", "10.4.4.4"}, "203.0.113.9/32"},    // two proxies, two headers
		{"10.1.2.3", []string{"garbage, 10.4.4.4"}, "10.4.4.4/32"},             // a hop no proxy wrote
		{"10.1.2.3", []string{"10.4.4.4"}, "10.4.4.4/32"},                      // proxies all the way
		{"10.1.2.3", nil, "10.1.2.3/32"},
		{"2001:db8:ffff::1", []string{"2001:db8:5:6::9"}, "2001:db8:5:6::/64"},
		{"::ffff:192.0.2.7", nil, "192.0.2.7/32"},
	} {
		var req fasthttp.Request
		for _, h := range tc.xff {
			req.Header.Add("X-Forwarded-For", h)
		}
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, &net.TCPAddr{IP: net.ParseIP(tc.peer), Port: 4000}, nil)
		if got := n.clientAddr(&ctx); got != netip.MustParsePrefix(tc.want) {
			t.Errorf("peer %s, X-Forwarded-For %q: counted as %s, want %s", tc.peer, tc.xff, got, tc.want)
		}
	}
	if _, err := parseTrustedProxies([]string{"10.0.0.0/33"}); err == nil {
		t.Error("a malformed CIDR was taken")
	}
}
