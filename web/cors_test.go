package web

import (
	"net/http"
	"net/http/httptest"
	"testing"

	coderws "github.com/coder/websocket"
)

// TestOriginPolicyMatchesCoderWebsocket: withCORS refuses websocket
// upgrades before the transport sees them, so its policy must be exactly
// coder/websocket's OriginPatterns check, which stays behind it.
func TestOriginPolicyMatchesCoderWebsocket(t *testing.T) {
	patterns := [][]string{
		nil,
		{"*"},
		{"https://app.example.com", "http://localhost:5173"},
		{"https://*.example.com"},
	}
	origins := []string{
		"https://app.example.com", "https://APP.example.com", "http://app.example.com",
		"https://a.b.example.com", "https://example.com", "http://localhost:5173",
		"http://localhost:5174", "https://evil.example", "http://chatql.test", "null", "",
	}
	for _, p := range patterns {
		policy := newOriginPolicy(p)
		for _, origin := range origins {
			r := httptest.NewRequest(http.MethodGet, "http://chatql.test/query", nil)
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Upgrade", "websocket")
			r.Header.Set("Sec-WebSocket-Version", "13")
			r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
			if origin != "" {
				r.Header.Set("Origin", origin)
			}
			w := httptest.NewRecorder()
			// A recorder cannot be hijacked: past the origin check, Accept
			// fails with 501 instead.
			_, _ = coderws.Accept(w, r, &coderws.AcceptOptions{OriginPatterns: p})
			coderAllows := w.Code != http.StatusForbidden
			ours := origin == "" || sameOrigin(r, origin) || policy.allows(origin)
			if ours != coderAllows {
				t.Errorf("patterns %q, origin %q: withCORS allows %v, coder/websocket %v (%d)", p, origin, ours, coderAllows, w.Code)
			}
		}
	}
}
