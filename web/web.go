// Package web holds what a browser needs: the chat page, embedded in the
// binary, and the nginx configuration that puts a cluster behind one address.
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

// Serve answers GET requests for the page and its assets; it reports false
// when the path is not one of them.
func Serve(ctx *fasthttp.RequestCtx) bool {
	if !ctx.IsGet() && !ctx.IsHead() {
		return false
	}
	name := string(ctx.Path())
	if name == "/" {
		name = "/index.html"
	}
	if strings.Contains(name, "..") {
		return false
	}
	body, err := static.ReadFile("static" + name)
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
