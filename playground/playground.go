// Package playground serves GraphiQL from the binary: the page, its own
// script, and GraphiQL and React embedded at pinned versions (assets/PINS
// lists their hashes), so that it works offline, behind a proxy that
// blocks CDNs, and under a Content-Security-Policy that allows nothing but
// this server.
package playground

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
)

// AssetsPath is where the page's scripts and styles are served.
const AssetsPath = "/playground/"

// ContentSecurityPolicy is the page's policy: everything from this origin
// only ('self' covers the websocket to the same host), no inline scripts,
// no framing. Styles may be inline because GraphiQL's dialogs lock
// scrolling with a <style> element they insert (react-remove-scroll; its
// text varies, so a hash cannot allow it); fonts and icons come as data:
// URLs inside GraphiQL's stylesheet. TestPlaygroundInBrowser fails on any
// violation.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
	"connect-src 'self'; img-src 'self' data:; font-src 'self' data:; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

//go:embed assets
var assets embed.FS

//go:embed page.html
var pageHTML string

var page = template.Must(template.New("playground").Parse(pageHTML))

// Options configure the playground.
type Options struct {
	// Endpoint is the path of the GraphQL endpoint, for HTTP and websocket.
	Endpoint string
	// Query is the document a visit without one opens on.
	Query string
	// Headers fill the header editor when the URL carries none (the demo
	// Authorization in dev mode).
	Headers map[string]string
}

// Register adds the page at GET / and its assets under AssetsPath to mux.
// A visit to / without a query is redirected to one with opts.Query, so
// that the editors start with it and the URL keeps what is typed.
func Register(mux *http.ServeMux, opts Options) error {
	var body bytes.Buffer
	err := page.Execute(&body, map[string]any{
		"Title":  "chatql",
		"Assets": AssetsPath,
		"Config": map[string]any{"endpoint": opts.Endpoint, "headers": opts.Headers},
	})
	if err != nil {
		return fmt.Errorf("playground page: %w", err)
	}
	html := body.Bytes()
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		return fmt.Errorf("playground assets: %w", err)
	}
	files := http.StripPrefix(AssetsPath, http.FileServerFS(static))

	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery == "" && opts.Query != "" {
			http.Redirect(w, r, "/?query="+url.QueryEscape(opts.Query), http.StatusFound)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		_, _ = w.Write(html)
	})
	mux.HandleFunc("GET "+AssetsPath, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		// The files change only with the binary; an hour spares reloading
		// a megabyte of GraphiQL on every visit.
		w.Header().Set("Cache-Control", "public, max-age=3600")
		files.ServeHTTP(w, r)
	})
	return nil
}
