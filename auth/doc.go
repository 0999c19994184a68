// Package auth verifies and issues chatql access tokens and hashes
// passwords, under a concurrency limit ([Passwords]).
//
// Two kinds of bearer token are accepted, both HS256 and both signed with the
// one configured secret (JWT_SECRET):
//
//   - tokens chatql issues itself after a password sign-in (iss "chatql");
//   - Supabase access tokens, signed with the project's legacy JWT secret
//     (iss ending in "/auth/v1", aud "authenticated", role "authenticated").
//
// Verifying a token is pure: it needs no database, so it is cheap enough to
// run on every request and every websocket connection_init. The caller (the
// GraphQL layer) loads or provisions the user row for the returned
// [Identity] afterwards.
//
// Everything here is safe for concurrent use; a [Tokens] is immutable once
// built.
package auth
