// Package web holds what a browser needs: the chat page and the JavaScript
// client it is built on (sdk/, served at /sdk/), the cluster view
// (/cluster), all embedded in the binary, and the nginx configuration that
// puts a cluster behind one address.
package web

import (
	"embed"
	"mime"
	"path"
	"strings"

	"github.com/valyala/fasthttp"
)

//go:embed static
var static embed.FS

// sdk is the JavaScript client's modules (not its tests or packaging),
// served at /sdk/ so that the page, and any other page, loads the very
// client that speaks this node's protocol.
//
//go:embed sdk/*.js
var sdk embed.FS

// Serve answers GET requests for the page and its assets; it reports false
// when the path is not one of them.
func Serve(ctx *fasthttp.RequestCtx) bool {
	if !ctx.IsGet() && !ctx.IsHead() {
		return false
	}
	name := string(ctx.Path())
	switch name {
	case "/":
		name = "/index.html"
	case "/cluster":
		name = "/cluster.html" // the cluster view
	}
	if strings.Contains(name, "..") {
		return false
	}
	var body []byte
	var err error
	if strings.HasPrefix(name, "/sdk/") {
		body, err = sdk.ReadFile(name[1:])
	} else {
		body, err = static.ReadFile("static" + name)
	}
	if err != nil {
		return false
	}
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	ctx.SetContentType(ctype)
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.Response.Header.Set("X-Content-Type-Options", "nosniff")
	ctx.SetBody(body)
	return true
}
