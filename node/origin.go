package node

import (
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/valyala/fasthttp"
)

// originAllowed applies --public-url and --origins to a browser's Origin:
// it must be the public URL's origin or one listed; with neither, it must
// name the host the request was sent to. That last check is the weakest: a
// page on a name that resolves to the node (DNS rebinding) sends the same
// Host as its Origin, which only a known public origin tells apart.
func (n *Node) originAllowed(ctx *fasthttp.RequestCtx) bool {
	origin := string(ctx.Request.Header.Peek("Origin"))
	if origin == "" {
		return true // not a browser: nothing to protect against
	}
	if n.publicOrigin == "" && len(n.cfg.Origins) == 0 {
		u, err := url.Parse(origin)
		return err == nil && strings.EqualFold(u.Host, string(ctx.Host()))
	}
	if n.publicOrigin != "" {
		if o, err := parseOrigin(origin); err == nil && o == n.publicOrigin {
			return true
		}
	}
	for _, o := range n.cfg.Origins {
		if o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	return false
}

// parseOrigin returns the origin of an http or https URL (RFC 6454):
// scheme://host[:port] in lower case, without the scheme's default port,
// as a browser writes it in Origin. It reads --public-url, and the Origins
// compared with it.
func parseOrigin(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	scheme := strings.ToLower(u.Scheme)
	if (scheme != "http" && scheme != "https") || u.Hostname() == "" {
		return "", fmt.Errorf("%q is not an http or https URL with a host", raw)
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if scheme == "http" && port == "80" || scheme == "https" && port == "443" {
		port = ""
	}
	if port != "" {
		host = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return scheme + "://" + host, nil
}
