package auth

import "context"

// identityKey is the context key for the verified Identity; being unexported
// and of its own type, no other package can read or overwrite it.
type identityKey struct{}

// WithIdentity returns a copy of ctx carrying id. Put only verified
// identities here: IdentityFrom's callers trust it without re-checking.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityFrom returns the identity WithIdentity stored in ctx, and false if
// there is none (an anonymous request).
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}
