// Package auth verifies and issues chatql access tokens and hashes
// passwords, under a concurrency limit ([Passwords]).
//
// Two kinds of bearer token are accepted:
//
//   - tokens chatql issues itself after a password sign-in (iss "chatql",
//     HS256 with the configured secret, JWT_SECRET);
//   - Supabase access tokens (aud "authenticated", role "authenticated"),
//     signed with the project's legacy secret (HS256, the same secret) or
//     with its asymmetric signing keys (ES256, RS256, ...: a [JWKS]
//     fetched from the project). Their iss must be the configured issuer
//     exactly; with none configured, any issuer ending in "/auth/v1" is
//     accepted for HS256 tokens (the legacy rule).
//
// The key is chosen by the token's alg before anything else: HS256 only
// ever meets the secret, an asymmetric alg only a JWKS key of its type.
//
// Verifying a token needs no database, so it is cheap enough to run on
// every request and every websocket connection_init; it touches the
// network only when an unknown kid triggers a (rate-limited) refresh of
// the key set. The caller (the GraphQL layer) loads or provisions the
// user row for the returned [Identity] afterwards.
//
// Everything here is safe for concurrent use; a [Tokens] is immutable once
// built, and a [JWKS] refreshes itself in the background until closed.
package auth
