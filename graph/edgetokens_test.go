package graph

import (
	"fmt"
	"testing"
	"time"

	"chatql/auth"
)

// TestEdgeTokens: a remembered token names its user until it expires, or
// for edgeTokenLifetime at most; the memory never holds more than
// edgeTokensSize tokens.
func TestEdgeTokens(t *testing.T) {
	var c edgeTokens
	now := time.Now()
	c.remember("a", auth.Identity{UserID: "u1", ExpiresAt: now.Add(time.Minute)})
	if got, ok := c.lookup("a", now); !ok || got != "u1" {
		t.Fatalf("lookup = %q, %v", got, ok)
	}
	if _, ok := c.lookup("b", now); ok {
		t.Fatal("an unknown token named a user")
	}
	if _, ok := c.lookup("a", now.Add(time.Minute)); ok {
		t.Fatal("an expired token named its user")
	}
	c.remember("long", auth.Identity{UserID: "u2", ExpiresAt: time.Now().Add(time.Hour)})
	if _, ok := c.lookup("long", time.Now().Add(edgeTokenLifetime+time.Second)); ok {
		t.Fatal("a token was remembered past edgeTokenLifetime")
	}
	for i := range 3 * edgeTokensSize {
		c.remember(fmt.Sprint("t", i), auth.Identity{UserID: "u", ExpiresAt: now.Add(time.Minute)})
		if n := len(c.entries); n > edgeTokensSize {
			t.Fatalf("%d tokens remembered, bound %d", n, edgeTokensSize)
		}
	}
}
