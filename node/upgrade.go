package node

import (
	"bytes"
	"encoding/base64"

	"github.com/valyala/fasthttp"
)

// upgradeRefusal checks a WebSocket upgrade request as RFC 6455 4.2.1 asks
// (and more strictly than the library's Upgrade, which takes any key),
// before anything is registered: a connection is registered with its
// owner before the upgrade, so that its welcome means it can be reached,
// and an upgrade the library would then refuse must cost the cluster
// nothing. It returns the HTTP status and the reason of a refusal, or 0.
func upgradeRefusal(ctx *fasthttp.RequestCtx) (status int, reason string) {
	h := &ctx.Request.Header
	switch {
	case !ctx.IsGet():
		return fasthttp.StatusMethodNotAllowed, "a WebSocket upgrade is a GET"
	case !hasToken(h.Peek("Connection"), "upgrade"), !hasToken(h.Peek("Upgrade"), "websocket"):
		return fasthttp.StatusBadRequest, "expected a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)"
	case !hasToken(h.Peek("Sec-WebSocket-Version"), "13"):
		ctx.Response.Header.Set("Sec-WebSocket-Version", "13") // RFC 6455 4.4: say which one
		return fasthttp.StatusUpgradeRequired, "this node speaks WebSocket version 13 only"
	case !validKey(h.Peek("Sec-WebSocket-Key")):
		return fasthttp.StatusBadRequest, "Sec-WebSocket-Key must be 16 random bytes in base64"
	}
	return 0, ""
}

// hasToken reports whether the comma-separated header value v lists token,
// in any case.
func hasToken(v []byte, token string) bool {
	for len(v) > 0 {
		var item []byte
		item, v, _ = bytes.Cut(v, []byte{','})
		if bytes.EqualFold(bytes.TrimSpace(item), []byte(token)) {
			return true
		}
	}
	return false
}

// validKey reports whether key is the base64 of 16 bytes (RFC 6455 4.1).
func validKey(key []byte) bool {
	var nonce [18]byte // room for 24 base64 characters
	n, err := base64.StdEncoding.Decode(nonce[:], bytes.TrimSpace(key))
	return err == nil && n == 16
}
