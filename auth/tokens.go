package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// ErrUnauthenticated is matched (with errors.Is) by every reason a token is
// refused. The wrapping error names the reason (expired, wrong signature,
// unexpected signing method, unknown issuer, ...) for logs; clients should be
// shown only this sentinel's message, so that a probe learns nothing about
// which check failed.
var ErrUnauthenticated = errors.New("invalid or expired access token")

const (
	// minSecretLength is the shortest HS256 secret NewTokens accepts. RFC
	// 7518 section 3.2 requires a key at least as long as the hash output
	// (256 bits); Supabase's generated secrets are longer still.
	minSecretLength = 32

	// issuer is the iss claim of tokens chatql issues.
	issuer = "chatql"

	// supabaseIssuerSuffix ends the iss claim of Supabase access tokens
	// ("https://<project>.supabase.co/auth/v1", or the local CLI's
	// "http://127.0.0.1:54321/auth/v1"). Any such issuer is accepted only
	// when none is configured (WithIssuer), and only for HS256 tokens: the
	// secret is the project's, so the issuer adds little.
	supabaseIssuerSuffix = "/auth/v1"

	// supabaseAuthenticated is both the aud and the role of a signed-in
	// Supabase user. The other roles signed with the same secret, "anon"
	// (the public API key) and "service_role" (the admin key), are not
	// users and must never be taken for one.
	supabaseAuthenticated = "authenticated"

	// leeway absorbs clock skew between chatql and Supabase's auth server
	// for exp, nbf and iat.
	leeway = 30 * time.Second
)

// Identity is who a verified token says the caller is.
type Identity struct {
	// UserID is the token's sub, in canonical lowercase uuid form.
	UserID string
	// Supabase is true for a Supabase access token, false for one chatql
	// issued.
	Supabase bool
	// Email is the Supabase token's email claim; "" for chatql tokens (and
	// for Supabase users without an email, such as phone sign-ins).
	Email string
	// Name is the Supabase token's user_metadata.full_name, else
	// user_metadata.name, else user_metadata.display_name; "" for chatql
	// tokens or when none is a non-empty string.
	Name string
	// Anonymous is the Supabase token's is_anonymous: an anonymous
	// sign-in, which has no email.
	Anonymous bool
	// ExpiresAt is the token's exp.
	ExpiresAt time.Time
}

// Tokens issues access tokens with one HS256 secret, and verifies them and
// Supabase's: HS256 ones with that secret, asymmetric ones with the keys of
// a JWKS when one is configured. It is immutable once built and safe for
// concurrent use.
type Tokens struct {
	secret []byte
	ttl    time.Duration
	now    func() time.Time
	// issuer is the exact iss of external tokens; "" accepts any issuer
	// ending in supabaseIssuerSuffix (HS256 only).
	issuer string
	// jwks verifies asymmetric tokens; nil refuses them.
	jwks *JWKS
	// methods are the algorithms the parser accepts.
	methods []string
}

// Option configures NewTokens.
type Option func(*Tokens)

// WithIssuer makes iss the only issuer of external (Supabase) tokens,
// compared exactly, for HS256 tokens as for asymmetric ones.
func WithIssuer(iss string) Option { return func(t *Tokens) { t.issuer = iss } }

// WithJWKS verifies asymmetrically signed tokens (ES256, RS256, ...) with
// the keys of j, chosen by the token's kid. It needs WithIssuer.
func WithJWKS(j *JWKS) Option { return func(t *Tokens) { t.jwks = j } }

// NewTokens returns a Tokens that signs with secret and issues tokens valid
// for ttl. secret is copied. A secret shorter than 32 bytes is refused:
// anyone who can guess it can mint a token for any user.
func NewTokens(secret []byte, ttl time.Duration, opts ...Option) (*Tokens, error) {
	if len(secret) < minSecretLength {
		return nil, fmt.Errorf("auth: JWT secret is %d bytes, want at least %d", len(secret), minSecretLength)
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("auth: token lifetime %v, want > 0", ttl)
	}
	t := &Tokens{secret: slices.Clone(secret), ttl: ttl, now: time.Now}
	for _, o := range opts {
		o(t)
	}
	t.methods = []string{jwt.SigningMethodHS256.Alg()}
	if t.jwks != nil {
		if t.issuer == "" {
			return nil, errors.New("auth: a JWKS needs the issuer its tokens carry")
		}
		t.methods = append(t.methods, asymmetricAlgs...)
	}
	return t, nil
}

// Ready returns an error wrapping ErrNoSigningKeys while a configured
// JWKS has no key; nil otherwise (the secret is always there).
func (t *Tokens) Ready() error {
	if t.jwks == nil {
		return nil
	}
	return t.jwks.Ready()
}

// JWKS returns the configured key set, or nil.
func (t *Tokens) JWKS() *JWKS { return t.jwks }

// claims is the union of the claims either token shape carries.
type claims struct {
	jwt.RegisteredClaims
	// Role, Email and UserMetadata are Supabase's; chatql tokens leave them
	// empty.
	Role  string `json:"role,omitempty"`
	Email string `json:"email,omitempty"`
	// UserMetadata is free-form data the user (or an OAuth provider) set,
	// so it is decoded loosely: a non-string name must not make an
	// otherwise valid token undecodable.
	UserMetadata map[string]any `json:"user_metadata,omitempty"`
	// IsAnonymous marks a Supabase anonymous sign-in.
	IsAnonymous bool `json:"is_anonymous,omitempty"`
}

// Issue returns a chatql access token for userID (a uuid) and when it
// expires. The token carries a random jti so that two tokens issued in the
// same second differ, which leaves room for a revocation list later.
func (t *Tokens) Issue(userID string) (token string, expiresAt time.Time, err error) {
	id, err := uuid.Parse(userID)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("issue token: user id %q is not a uuid: %w", userID, err)
	}
	now := t.now()
	exp := jwt.NewNumericDate(now.Add(t.ttl))
	c := claims{RegisteredClaims: jwt.RegisteredClaims{
		Issuer:    issuer,
		Subject:   id.String(),
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: exp,
		ID:        uuid.NewString(),
	}}
	signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(t.secret)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("issue token: sign: %w", err)
	}
	// exp is truncated to whole seconds on the wire; report what the token
	// says, not the untruncated time.
	return signed, exp.Time, nil
}

// Verify checks raw (the token without the "Bearer " prefix) and says who
// it signs in. The key is chosen by the header's alg first: HS256 is
// verified with the secret (never with the JWKS, whatever kid it names);
// an asymmetric alg, only when a JWKS is configured, with the key its kid
// names, which must be of that alg's type. Then: exp present and not
// passed, nbf and iat not in the future, and one of the accepted shapes
// (see the package documentation). ctx bounds the wait for a key set
// refresh that an unknown kid may trigger. Every failure wraps
// ErrUnauthenticated. HTTP requests and websocket connection_init both
// come here.
func (t *Tokens) Verify(ctx context.Context, raw string) (Identity, error) {
	var c claims
	token, err := jwt.ParseWithClaims(raw, &c, t.keyFunc(ctx),
		jwt.WithValidMethods(t.methods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(t.now),
	)
	if err != nil {
		return Identity{}, unauthenticated(parseFailure(token, err, t.methods))
	}

	id, err := uuid.Parse(c.Subject)
	if err != nil {
		return Identity{}, unauthenticated(fmt.Sprintf("sub %q is not a uuid", c.Subject))
	}
	ident := Identity{UserID: id.String(), ExpiresAt: c.ExpiresAt.Time}
	hs256 := token.Method == jwt.SigningMethodHS256

	switch {
	case c.Issuer == issuer && hs256:
		return ident, nil
	case t.external(c.Issuer, hs256):
		if !slices.Contains(c.Audience, supabaseAuthenticated) {
			return Identity{}, unauthenticated(fmt.Sprintf("supabase token audience %q, want %q", []string(c.Audience), supabaseAuthenticated))
		}
		if c.Role != supabaseAuthenticated {
			return Identity{}, unauthenticated(fmt.Sprintf("supabase token role %q, want %q", c.Role, supabaseAuthenticated))
		}
		ident.Supabase = true
		ident.Email = c.Email
		ident.Name = metadataName(c.UserMetadata)
		ident.Anonymous = c.IsAnonymous
		return ident, nil
	default:
		return Identity{}, unauthenticated(fmt.Sprintf("unknown issuer %q for a %s token", c.Issuer, token.Method.Alg()))
	}
}

// external reports whether iss is the configured issuer of external
// tokens, or, with none configured, a Supabase issuer of an HS256 token.
func (t *Tokens) external(iss string, hs256 bool) bool {
	if t.issuer != "" {
		return iss == t.issuer
	}
	return hs256 && strings.HasSuffix(iss, supabaseIssuerSuffix)
}

// keyFunc picks the key by algorithm. The parser has already refused
// every algorithm not in t.methods ("none" included); checking again here
// means a future change to the parser options cannot by itself let the
// HMAC secret verify another algorithm, or a JWKS key verify HS256.
func (t *Tokens) keyFunc(ctx context.Context) jwt.Keyfunc {
	return func(token *jwt.Token) (any, error) {
		switch {
		case token.Method == jwt.SigningMethodHS256:
			return t.secret, nil
		case t.jwks != nil && slices.Contains(asymmetricAlgs, token.Method.Alg()):
			return t.jwks.key(ctx, token)
		default:
			return nil, fmt.Errorf("unexpected signing method %s", token.Method.Alg())
		}
	}
}

// parseFailure turns a jwt parse error into a short reason for logs.
func parseFailure(token *jwt.Token, err error, methods []string) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		// The parser reports a refused algorithm as an invalid signature;
		// name the algorithm, since that is what an operator needs to see.
		if alg := headerAlg(token); !slices.Contains(methods, alg) {
			return fmt.Sprintf("unexpected signing method %s", alg)
		}
		return "wrong signature"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// No key: the keyfunc's error says why (unknown kid, no signing
		// keys loaded, a key of the wrong type).
		return fmt.Sprintf("unverifiable token (alg %s): %v", headerAlg(token), err)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "missing exp claim"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token not valid yet (nbf in the future)"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token issued in the future (iat)"
	default:
		return err.Error()
	}
}

// headerAlg is the alg the token's header claims, for error messages.
func headerAlg(token *jwt.Token) string {
	if token == nil {
		return "(none)"
	}
	alg, _ := token.Header["alg"].(string)
	if alg == "" {
		return "(none)"
	}
	return alg
}

// metadataName picks the display name Supabase's providers put in
// user_metadata: full_name (Google, GitHub), name, or display_name
// (email sign-up with custom data), whichever is first a non-empty string.
func metadataName(md map[string]any) string {
	for _, k := range []string{"full_name", "name", "display_name"} {
		if s, ok := md[k].(string); ok && strings.TrimSpace(s) != "" {
			return s
		}
	}
	return ""
}

func unauthenticated(reason string) error {
	return fmt.Errorf("%w: %s", ErrUnauthenticated, reason)
}
