package auth_test

// The harness of the package's tests: TestMain, tokens, and claims to
// sign, break and tamper with.

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"chatql/auth"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testUserID = "4f1c1a0e-8a8e-4a53-9a8b-2d1f3c5b7e90"
	ttl        = 15 * time.Minute
)

var secret = []byte("0123456789abcdef0123456789abcdef-test-secret")

func newTokens(t *testing.T) *auth.Tokens {
	t.Helper()
	tok, err := auth.NewTokens(secret, ttl)
	if err != nil {
		t.Fatalf("NewTokens: %v", err)
	}
	return tok
}

// sign signs claims with method and key, as a third party forging or
// issuing a token would.
func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", method.Alg(), err)
	}
	return s
}

// unsigned builds an alg "none" token by hand, without the library's
// deliberately awkward opt-in.
func unsigned(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	enc := base64.RawURLEncoding
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return enc.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc.EncodeToString(payload) + "."
}

// chatqlClaims are valid claims for a chatql token; supabaseClaims for a
// Supabase one. Cases copy and then break them.
func chatqlClaims(now time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"iss": "chatql",
		"sub": testUserID,
		"iat": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
		"jti": "x",
	}
}

func supabaseClaims(now time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"iss":   "https://x.supabase.co/auth/v1",
		"aud":   "authenticated",
		"role":  "authenticated",
		"sub":   testUserID,
		"email": "ada@example.com",
		"iat":   now.Unix(),
		"exp":   now.Add(time.Hour).Unix(),
		"user_metadata": map[string]any{
			"full_name": "Ada Lovelace",
			"name":      "ada",
		},
	}
}

// with returns a copy of c with the given claims set, or deleted when the
// value is nil.
func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == nil {
			delete(out, k)
		} else {
			out[k] = kv[i+1]
		}
	}
	return out
}

// tamper replaces token's payload with claims, keeping its header and
// signature.
func tamper(t *testing.T, token string, claims jwt.MapClaims) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(token, ".")
	parts[1] = base64.RawURLEncoding.EncodeToString(payload)
	return strings.Join(parts, ".")
}
