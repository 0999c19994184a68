package graph

import (
	"sync"
	"time"

	"chatql/auth"
)

// edgeTokensSize bounds the tokens edgeTokens remembers: a few thousand
// signed-in clients, a few megabytes (a Supabase token is about 1 KB).
const edgeTokensSize = 4096

// edgeTokenLifetime bounds how long a token is remembered, whatever its
// expiry: a token whose key has left the key set stops naming its user's
// principal within that time too.
const edgeTokenLifetime = 5 * time.Minute

// edgeTokens remembers whose the tokens that verified at the edge are, so
// that the same token seen again names its user without its signature
// being checked again: under a flood of refusals, verifying each token
// was a fifth of what a refusal cost. It only picks the admission
// principal. An operation that is admitted on a remembered token
// verifies it for real, so a key removed from the key set still
// refuses it. Emptied when full, rather than ordered: what matters is
// that its size is bounded.
type edgeTokens struct {
	mu      sync.Mutex
	entries map[string]rememberedToken
}

type rememberedToken struct {
	userID  string
	expires time.Time
}

// lookup returns the user of raw, if raw verified before and has not
// expired since.
func (c *edgeTokens) lookup(raw string, now time.Time) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[raw]
	if !ok {
		return "", false
	}
	if !now.Before(e.expires) {
		delete(c.entries, raw)
		return "", false
	}
	return e.userID, true
}

// remember records that raw verified as id.
func (c *edgeTokens) remember(raw string, id auth.Identity) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil || len(c.entries) >= edgeTokensSize {
		c.entries = make(map[string]rememberedToken, edgeTokensSize/4)
	}
	expires := time.Now().Add(edgeTokenLifetime)
	if id.ExpiresAt.Before(expires) {
		expires = id.ExpiresAt
	}
	c.entries[raw] = rememberedToken{userID: id.UserID, expires: expires}
}
