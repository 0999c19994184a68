package web

import (
	"encoding/json"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
)

// What a CORS preflight is told: the methods and request headers the API
// uses, and how long (seconds) a browser may cache the answer.
const (
	corsAllowMethods = "GET, POST, OPTIONS"
	corsAllowHeaders = "Authorization, Content-Type"
	corsMaxAge       = 600
)

// originPolicy decides which browser origins of other sites may use the
// API. It matches exactly as coder/websocket's AcceptOptions.OriginPatterns
// do, so that the HTTP and the websocket answers never disagree: a pattern
// containing "://" is matched against the origin's scheme://host, any other
// (such as "*") against its host alone, with path.Match, ignoring case.
type originPolicy struct {
	patterns []string
}

func newOriginPolicy(patterns []string) originPolicy {
	return originPolicy{patterns: patterns}
}

// allows reports whether a cross-origin request from origin may proceed.
// An origin that is not a URL with a host ("null" from a sandboxed frame or
// a file, say) matches "*" only.
func (p originPolicy) allows(origin string) bool {
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	for _, pattern := range p.patterns {
		target := u.Host
		if strings.Contains(pattern, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(pattern), strings.ToLower(target)); ok {
			return true
		}
	}
	return false
}

// sameOrigin reports whether origin is the host the request was sent to,
// which is how coder/websocket tells a page of this server.
func sameOrigin(r *http.Request, origin string) bool {
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

// withCORS applies the origin policy to requests from browsers (those with
// an Origin header; others pass untouched):
//
//   - A websocket upgrade from a page of another site that the policy does
//     not allow is refused with 403 FORBIDDEN. Browsers open websockets
//     anywhere without asking first, so the Origin check is the server's
//     only say. The transport checks again (coder/websocket), but refusing
//     here answers in JSON with a code and spares the log gqlgen's
//     "unable to upgrade" line.
//   - An allowed origin's preflight (OPTIONS with
//     Access-Control-Request-Method) is answered here, 204 with the allowed
//     methods and headers; its other requests get Access-Control-Allow-Origin
//     (the request's origin, also when the policy is "*") so that the page may
//     read the response, Retry-After included.
//   - A disallowed origin gets no CORS headers at all, so the browser keeps
//     the response from the page.
func withCORS(policy originPolicy, forbiddenCode string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		if r.Header.Get("Upgrade") != "" {
			if !sameOrigin(r, origin) && !policy.allows(origin) {
				writeError(w, http.StatusForbidden, forbiddenCode, "a page from "+origin+" may not open a websocket here")
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		// The answer depends on the Origin: caches must not reuse it for
		// another one.
		h.Add("Vary", "Origin")
		if !policy.allows(origin) {
			next.ServeHTTP(w, r)
			return
		}
		h.Set("Access-Control-Allow-Origin", origin)
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", corsAllowMethods)
			h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
			h.Set("Access-Control-Max-Age", strconv.Itoa(corsMaxAge))
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.Set("Access-Control-Expose-Headers", "Retry-After")
		next.ServeHTTP(w, r)
	})
}

// writeError writes a GraphQL-shaped error response with a code.
func writeError(w http.ResponseWriter, status int, code, message string) {
	body, _ := json.Marshal(map[string]any{
		"errors": []map[string]any{{"message": message, "extensions": map[string]any{"code": code}}},
		"data":   nil,
	})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
