package auth

import (
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
	// "http://127.0.0.1:54321/auth/v1").
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
	// ExpiresAt is the token's exp.
	ExpiresAt time.Time
}

// Tokens issues and verifies access tokens with one HS256 secret. It is
// immutable and safe for concurrent use.
type Tokens struct {
	secret []byte
	ttl    time.Duration
	now    func() time.Time
}

// NewTokens returns a Tokens that signs with secret and issues tokens valid
// for ttl. secret is copied. A secret shorter than 32 bytes is refused:
// anyone who can guess it can mint a token for any user.
func NewTokens(secret []byte, ttl time.Duration) (*Tokens, error) {
	if len(secret) < minSecretLength {
		return nil, fmt.Errorf("auth: JWT secret is %d bytes, want at least %d", len(secret), minSecretLength)
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("auth: token lifetime %v, want > 0", ttl)
	}
	return &Tokens{secret: slices.Clone(secret), ttl: ttl, now: time.Now}, nil
}

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

// Verify checks raw (the token without the "Bearer " prefix): HS256 only,
// signed with the configured secret, exp present and not passed, nbf and iat
// not in the future, and one of the two accepted shapes (see the package
// documentation). Every failure wraps ErrUnauthenticated.
func (t *Tokens) Verify(raw string) (Identity, error) {
	var c claims
	token, err := jwt.ParseWithClaims(raw, &c, t.key,
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(t.now),
	)
	if err != nil {
		return Identity{}, unauthenticated(parseFailure(token, err))
	}

	id, err := uuid.Parse(c.Subject)
	if err != nil {
		return Identity{}, unauthenticated(fmt.Sprintf("sub %q is not a uuid", c.Subject))
	}
	ident := Identity{UserID: id.String(), ExpiresAt: c.ExpiresAt.Time}

	switch {
	case c.Issuer == issuer:
		return ident, nil
	case strings.HasSuffix(c.Issuer, supabaseIssuerSuffix):
		if !slices.Contains(c.Audience, supabaseAuthenticated) {
			return Identity{}, unauthenticated(fmt.Sprintf("supabase token audience %q, want %q", []string(c.Audience), supabaseAuthenticated))
		}
		if c.Role != supabaseAuthenticated {
			return Identity{}, unauthenticated(fmt.Sprintf("supabase token role %q, want %q", c.Role, supabaseAuthenticated))
		}
		ident.Supabase = true
		ident.Email = c.Email
		ident.Name = metadataName(c.UserMetadata)
		return ident, nil
	default:
		return Identity{}, unauthenticated(fmt.Sprintf("unknown issuer %q", c.Issuer))
	}
}

// key hands the parser the secret. The parser has already refused every
// algorithm but HS256; checking again here means a future change to the
// parser options cannot by itself let an HMAC key verify another algorithm.
func (t *Tokens) key(token *jwt.Token) (any, error) {
	if token.Method != jwt.SigningMethodHS256 {
		return nil, fmt.Errorf("unexpected signing method %s", token.Method.Alg())
	}
	return t.secret, nil
}

// parseFailure turns a jwt parse error into a short reason for logs.
func parseFailure(token *jwt.Token, err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		// The parser reports a refused algorithm as an invalid signature;
		// name the algorithm, since that is what an operator needs to see.
		if alg := headerAlg(token); alg != jwt.SigningMethodHS256.Alg() {
			return fmt.Sprintf("unexpected signing method %s", alg)
		}
		return "wrong signature"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return fmt.Sprintf("unverifiable token (alg %s)", headerAlg(token))
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
