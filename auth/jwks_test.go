package auth_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"chatql/auth"
	"chatql/auth/authtest"
)

// fast is a key set configuration that refetches every few milliseconds,
// so that the tests wait on fetches rather than on time.
func fast(url string) auth.JWKSConfig {
	return auth.JWKSConfig{URL: url, RefreshInterval: 20 * time.Millisecond, MinRefreshInterval: 10 * time.Millisecond}
}

// newJWKSTokens returns Tokens verifying with the key set at cfg.URL and
// issuer issuerOf(srv); the key set stops with the test.
func newJWKSTokens(t *testing.T, srv *authtest.KeyServer, cfg auth.JWKSConfig) (*auth.Tokens, *auth.JWKS) {
	t.Helper()
	j, err := auth.NewJWKS(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(j.Close)
	tok, err := auth.NewTokens(secret, ttl, auth.WithIssuer(issuerOf(srv)), auth.WithJWKS(j))
	if err != nil {
		t.Fatal(err)
	}
	return tok, j
}

func issuerOf(srv *authtest.KeyServer) string { return srv.Base() + "/auth/v1" }

// projectClaims are a signed-in Supabase user's claims from srv's project.
func projectClaims(srv *authtest.KeyServer) jwt.MapClaims {
	return with(supabaseClaims(time.Now()), "iss", issuerOf(srv))
}

// loaded waits until j has loaded and holds n keys (a change of the
// count needs fetches to go on: a short refresh interval).
func loaded(t *testing.T, srv *authtest.KeyServer, j *auth.JWKS, n int) {
	t.Helper()
	select {
	case <-j.Loaded():
	case <-time.After(time.Minute):
		t.Fatalf("key set not loaded after a minute (%d fetches)", srv.Fetches())
	}
	srv.WaitFor(fmt.Sprintf("%d keys", n), func() bool { return j.Stats().Keys == n })
}

func expectAccepted(t *testing.T, tok *auth.Tokens, name, raw string) {
	t.Helper()
	id, err := tok.Verify(t.Context(), raw)
	if err != nil {
		t.Errorf("%s: refused: %v", name, err)
		return
	}
	if id.UserID != testUserID || !id.Supabase {
		t.Errorf("%s: identity %+v", name, id)
	}
}

func expectRefused(t *testing.T, tok *auth.Tokens, name, raw, reason string) {
	t.Helper()
	_, err := tok.Verify(t.Context(), raw)
	if !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("%s: err = %v, want ErrUnauthenticated", name, err)
		return
	}
	if !strings.Contains(err.Error(), reason) {
		t.Errorf("%s: err = %q, want it to say %q", name, err, reason)
	}
}

// TestJWKSAlgorithms: tokens signed with the set's ES256, RS256 and EdDSA
// keys are accepted; the legacy secret keeps working beside them.
func TestJWKSAlgorithms(t *testing.T) {
	t.Parallel()
	keys := []authtest.Key{
		authtest.NewKey(t, "ES256", "ec"),
		authtest.NewKey(t, "RS256", "rsa"),
		authtest.NewKey(t, "EdDSA", "ed"),
	}
	srv := authtest.NewKeyServer(t, keys...)
	tok, j := newJWKSTokens(t, srv, fast(srv.URL()))
	loaded(t, srv, j, 3)
	for _, k := range keys {
		expectAccepted(t, tok, k.Alg, k.Sign(t, projectClaims(srv)))
	}
	expectAccepted(t, tok, "HS256 with the legacy secret", sign(t, jwt.SigningMethodHS256, secret, projectClaims(srv)))
	own, _, err := tok.Issue(testUserID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tok.Verify(t.Context(), own); err != nil {
		t.Errorf("chatql's own token refused: %v", err)
	}
	if err := tok.Ready(); err != nil {
		t.Errorf("Ready = %v with keys loaded", err)
	}
}

// TestJWKSRotation: a key added to the set verifies once a token names it
// (the unknown kid refreshes the set); a key removed stops verifying after
// the next refresh.
func TestJWKSRotation(t *testing.T) {
	t.Parallel()
	old, next := authtest.NewKey(t, "ES256", "old"), authtest.NewKey(t, "ES256", "next")
	srv := authtest.NewKeyServer(t, old)
	cfg := fast(srv.URL())
	cfg.RefreshInterval = time.Hour // only unknown kids refresh, at first
	tok, j := newJWKSTokens(t, srv, cfg)
	loaded(t, srv, j, 1)
	oldToken := old.Sign(t, projectClaims(srv))
	expectAccepted(t, tok, "old key", oldToken)

	srv.SetKeys(old, next)
	expectAccepted(t, tok, "new key, by the unknown-kid refresh", next.Sign(t, projectClaims(srv)))

	srv.SetKeys(next)
	// The unknown-kid path does not fire for a kid the set still holds:
	// a refused token's kid is not unknown until the set is refetched.
	// Refetch by naming an unknown kid, then the old key is gone.
	expectRefused(t, tok, "made-up kid", authtest.Key{KID: "nope", Alg: "ES256", Private: next.Private}.Sign(t, projectClaims(srv)), "not found")
	expectRefused(t, tok, "old key after it was removed", oldToken, "not found")
	expectAccepted(t, tok, "new key after the old was removed", next.Sign(t, projectClaims(srv)))
}

// TestJWKSRemovedByPeriodicRefresh: without any unknown kid, the periodic
// refresh alone drops a removed key.
func TestJWKSRemovedByPeriodicRefresh(t *testing.T) {
	t.Parallel()
	a, b := authtest.NewKey(t, "RS256", "a"), authtest.NewKey(t, "RS256", "b")
	srv := authtest.NewKeyServer(t, a, b)
	tok, j := newJWKSTokens(t, srv, fast(srv.URL()))
	loaded(t, srv, j, 2)
	aToken := a.Sign(t, projectClaims(srv))
	expectAccepted(t, tok, "key a", aToken)
	srv.SetKeys(b)
	loaded(t, srv, j, 1)
	expectRefused(t, tok, "key a after removal", aToken, "not found")
	expectAccepted(t, tok, "key b", b.Sign(t, projectClaims(srv)))
}

// TestJWKSUnknownKIDFlood: 1,000 concurrent tokens with made-up kids
// cost at most one fetch per MinRefreshInterval (the default, 30 s, here)
// and are all refused without waiting for the limiter.
func TestJWKSUnknownKIDFlood(t *testing.T) {
	t.Parallel()
	k := authtest.NewKey(t, "ES256", "real")
	srv := authtest.NewKeyServer(t, k)
	tok, j := newJWKSTokens(t, srv, auth.JWKSConfig{URL: srv.URL()})
	loaded(t, srv, j, 1)
	before := srv.Fetches()

	const n = 1000
	tokens := make([]string, n)
	for i := range tokens {
		tokens[i] = authtest.Key{KID: uuid.NewString(), Alg: "ES256", Private: k.Private}.Sign(t, projectClaims(srv))
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range tokens {
		wg.Go(func() { _, errs[i] = tok.Verify(context.Background(), tokens[i]) })
	}
	wg.Wait()
	fetches := srv.Fetches() - before
	t.Logf("%d requests with made-up kids: %d JWKS fetches", n, fetches)
	if fetches > 1 {
		t.Errorf("%d fetches for %d unknown kids, want at most 1", fetches, n)
	}
	for i, err := range errs {
		if !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("token %d: err = %v, want refused", i, err)
		}
	}
	expectAccepted(t, tok, "real key after the flood", k.Sign(t, projectClaims(srv)))
}

// TestJWKSDownAtStart: a set that cannot be fetched at start leaves
// tokens refused and Ready failing, is retried in the background, and
// verifies once it loads.
func TestJWKSDownAtStart(t *testing.T) {
	t.Parallel()
	k := authtest.NewKey(t, "ES256", "k")
	srv := authtest.NewKeyServer(t, k)
	srv.SetDown(true)
	tok, j := newJWKSTokens(t, srv, fast(srv.URL()))
	srv.WaitFor("two failed fetches", func() bool { return j.Stats().Failures >= 2 })
	if err := tok.Ready(); !errors.Is(err, auth.ErrNoSigningKeys) {
		t.Errorf("Ready = %v while down, want ErrNoSigningKeys", err)
	}
	token := k.Sign(t, projectClaims(srv))
	expectRefused(t, tok, "while the set never loaded", token, "no signing keys")

	srv.SetDown(false)
	loaded(t, srv, j, 1)
	expectAccepted(t, tok, "once loaded", token)
	if err := tok.Ready(); err != nil {
		t.Errorf("Ready = %v once loaded", err)
	}
}

// TestJWKSDownLater: failed refreshes keep the last good keys.
func TestJWKSDownLater(t *testing.T) {
	t.Parallel()
	k := authtest.NewKey(t, "ES256", "k")
	srv := authtest.NewKeyServer(t, k)
	tok, j := newJWKSTokens(t, srv, fast(srv.URL()))
	loaded(t, srv, j, 1)
	srv.SetDown(true)
	srv.WaitFor("three failed fetches", func() bool { return j.Stats().Failures >= 3 })
	expectAccepted(t, tok, "while the endpoint is down", k.Sign(t, projectClaims(srv)))
	if s := j.Stats(); s.Keys != 1 {
		t.Errorf("stats %+v while down, want the 1 key kept", s)
	}
}

// TestJWKSOversized: a key set over the size limit is refused like a
// failed fetch.
func TestJWKSOversized(t *testing.T) {
	t.Parallel()
	k := authtest.NewKey(t, "ES256", "k")
	srv := authtest.NewKeyServer(t, k)
	// A valid set holding k, padded with whitespace past 1 MiB.
	jwk, err := json.Marshal(k.JWK(t))
	if err != nil {
		t.Fatal(err)
	}
	body := append([]byte(`{"keys":[`), jwk...)
	body = append(body, bytes.Repeat([]byte(" "), auth.DefaultJWKSMaxBytes)...)
	srv.SetBody(append(body, "]}"...))
	tok, j := newJWKSTokens(t, srv, fast(srv.URL()))
	srv.WaitFor("a failed fetch", func() bool { return j.Stats().Failures >= 1 })
	expectRefused(t, tok, "key from an oversized set", k.Sign(t, projectClaims(srv)), "no signing keys")
	if s := j.Stats(); s.Keys != 0 {
		t.Errorf("stats %+v, want no key from an oversized set", s)
	}
}

// TestJWKSAlgorithmConfusion: no key is used with an algorithm it was not
// made for, and HS256 never reaches the key set.
func TestJWKSAlgorithmConfusion(t *testing.T) {
	t.Parallel()
	ec := authtest.NewKey(t, "ES256", "ec")
	rsaNoAlg := authtest.NewKey(t, "RS256", "rsa-no-alg")
	rsaNoAlg.JWKAlg = ""
	ecNoAlg := authtest.NewKey(t, "ES256", "ec-no-alg")
	ecNoAlg.JWKAlg = ""
	srv := authtest.NewKeyServer(t, ec, rsaNoAlg, ecNoAlg)
	tok, j := newJWKSTokens(t, srv, auth.JWKSConfig{URL: srv.URL(), MinRefreshInterval: time.Hour})
	loaded(t, srv, j, 3)
	claims := projectClaims(srv)

	pub, err := x509.MarshalPKIXPublicKey(ec.Private.Public())
	if err != nil {
		t.Fatal(err)
	}
	before := srv.Fetches()
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	hs.Header["kid"] = ec.KID
	hsToken, err := hs.SignedString(pub)
	if err != nil {
		t.Fatal(err)
	}
	expectRefused(t, tok, "HS256 signed with the public key's bytes", hsToken, "wrong signature")
	hs.Header["kid"] = "unknown-kid"
	hsUnknown, _ := hs.SignedString(pub)
	expectRefused(t, tok, "HS256 with an unknown kid", hsUnknown, "wrong signature")
	if got := srv.Fetches(); got != before {
		t.Errorf("HS256 tokens made %d fetches, want none", got-before)
	}

	none := with(claims)
	noneToken := unsigned(t, none)
	expectRefused(t, tok, "alg none", noneToken, "unexpected signing method none")

	// The JWK names ES256; a token claiming ES384 (signed with a P-384
	// key under the same kid) must not be verified with it.
	p384 := authtest.NewKey(t, "ES384", ec.KID)
	expectRefused(t, tok, "ES384 header on an ES256 JWK", p384.Sign(t, claims), "does not match")
	// RS256 header under the EC key's kid (signed with an RSA key).
	expectRefused(t, tok, "RS256 header on an ES256 JWK", authtest.Key{KID: ec.KID, Alg: "RS256", Private: rsaNoAlg.Private}.Sign(t, claims), "does not match")
	// JWKs without alg: the key's type decides.
	expectRefused(t, tok, "ES256 header on an RSA JWK without alg", authtest.Key{KID: rsaNoAlg.KID, Alg: "ES256", Private: ec.Private}.Sign(t, claims), "cannot verify ES256")
	expectRefused(t, tok, "ES384 header on a P-256 JWK without alg", authtest.Key{KID: ecNoAlg.KID, Alg: "ES384", Private: p384.Private}.Sign(t, claims), "cannot verify ES384")
	expectAccepted(t, tok, "ES256 on a P-256 JWK without alg", ecNoAlg.Sign(t, claims))
	// An asymmetric token must carry a kid.
	noKid := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	noKidToken, err := noKid.SignedString(ec.Private)
	if err != nil {
		t.Fatal(err)
	}
	expectRefused(t, tok, "ES256 without a kid", noKidToken, "without a kid")
}

// TestJWKSIssuer: with an issuer configured, external tokens must carry it
// exactly, HS256 ones included; an asymmetric token never passes as
// chatql's own.
func TestJWKSIssuer(t *testing.T) {
	t.Parallel()
	k := authtest.NewKey(t, "ES256", "k")
	srv := authtest.NewKeyServer(t, k)
	tok, j := newJWKSTokens(t, srv, fast(srv.URL()))
	loaded(t, srv, j, 1)
	claims := projectClaims(srv)
	other := with(claims, "iss", "https://other.supabase.co/auth/v1")
	expectRefused(t, tok, "ES256 from another issuer", k.Sign(t, other), "unknown issuer")
	expectRefused(t, tok, "HS256 from another /auth/v1 issuer", sign(t, jwt.SigningMethodHS256, secret, other), "unknown issuer")
	expectRefused(t, tok, "ES256 claiming chatql's issuer", k.Sign(t, chatqlClaims(time.Now())), "unknown issuer")
	expectRefused(t, tok, "ES256 with a trailing slash on the issuer", k.Sign(t, with(claims, "iss", issuerOf(srv)+"/")), "unknown issuer")

	legacy := newTokens(t)
	if _, err := legacy.Verify(t.Context(), sign(t, jwt.SigningMethodHS256, secret, other)); err != nil {
		t.Errorf("legacy (no issuer configured): any /auth/v1 issuer refused: %v", err)
	}
	expectRefused(t, legacy, "ES256 without a JWKS", k.Sign(t, claims), "unexpected signing method ES256")
}

// TestVerifyAnonymous: is_anonymous reaches the identity.
func TestVerifyAnonymous(t *testing.T) {
	t.Parallel()
	tok := newTokens(t)
	id, err := tok.Verify(t.Context(), sign(t, jwt.SigningMethodHS256, secret, with(supabaseClaims(time.Now()), "email", "", "is_anonymous", true)))
	if err != nil {
		t.Fatal(err)
	}
	if !id.Anonymous || id.Email != "" {
		t.Errorf("identity %+v, want anonymous without email", id)
	}
}

func TestCheckJWKSURL(t *testing.T) {
	t.Parallel()
	for url, ok := range map[string]bool{
		"https://abc.supabase.co/auth/v1/.well-known/jwks.json": true,
		"http://127.0.0.1:54321/auth/v1/.well-known/jwks.json":  true,
		"http://127.1.2.3/jwks.json":                            true,
		"http://localhost:54321/jwks.json":                      true,
		"http://[::1]:54321/jwks.json":                          true,
		"http://abc.supabase.co/auth/v1/.well-known/jwks.json":  false,
		"http://10.0.0.1/jwks.json":                             false,
		"http://localhost.example.com/jwks.json":                false,
		"ftp://abc.supabase.co/jwks.json":                       false,
		"abc.supabase.co/jwks.json":                             false,
		"":                                                      false,
	} {
		err := auth.CheckJWKSURL(url)
		if (err == nil) != ok {
			t.Errorf("CheckJWKSURL(%q) = %v, want ok %v", url, err, ok)
		}
	}
	if _, err := auth.NewJWKS(context.Background(), auth.JWKSConfig{URL: "http://abc.supabase.co/jwks.json"}); err == nil {
		t.Error("NewJWKS accepted a plain http URL off loopback")
	}
}
