// Package authtest serves JSON Web Key Sets and signs tokens with their
// keys, for tests of chatql's token verification: a key server on
// 127.0.0.1 that counts its fetches, can be taken down, and can serve any
// body.
package authtest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// Key is a signing key and how the key set names it.
type Key struct {
	KID string
	// Alg is the token's alg; JWKAlg is the JWK's alg, "" to leave it out.
	Alg, JWKAlg string
	Private     crypto.Signer
}

// NewKey generates a key for alg (ES256, ES384, RS256, PS256 or EdDSA)
// whose JWK names alg.
func NewKey(t testing.TB, alg, kid string) Key {
	t.Helper()
	var (
		k   crypto.Signer
		err error
	)
	switch alg {
	case "ES256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ES384":
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "RS256", "PS256":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case "EdDSA":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("authtest: no key for alg %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return Key{KID: kid, Alg: alg, JWKAlg: alg, Private: k}
}

// Sign signs claims with k under its kid and alg.
func (k Key) Sign(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	return k.SignAs(t, k.Alg, claims)
}

// SignAs signs claims with k under its kid, with alg in the header
// (golang-jwt refuses a key of the wrong type for alg).
func (k Key) SignAs(t testing.TB, alg string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.GetSigningMethod(alg), claims)
	tok.Header["kid"] = k.KID
	s, err := tok.SignedString(k.Private)
	if err != nil {
		t.Fatalf("authtest: sign %s: %v", alg, err)
	}
	return s
}

// JWK is k's public half as a key set publishes it.
func (k Key) JWK(t testing.TB) jwkset.JWKMarshal {
	t.Helper()
	j, err := jwkset.NewJWKFromKey(k.Private.Public(), jwkset.JWKOptions{
		Metadata: jwkset.JWKMetadataOptions{KID: k.KID, ALG: jwkset.ALG(k.JWKAlg), USE: jwkset.UseSig},
	})
	if err != nil {
		t.Fatalf("authtest: JWK of %s: %v", k.KID, err)
	}
	return j.Marshal()
}

// KeyServer serves a key set over http on 127.0.0.1 and counts requests.
type KeyServer struct {
	t   testing.TB
	srv *httptest.Server

	mu      sync.Mutex
	body    []byte
	down    bool
	fetches int
	// fetched gets a value (if it has room) after every request, so that
	// a waiter can recheck its condition.
	fetched chan struct{}
}

// NewKeyServer starts a key server holding keys; it stops with the test.
func NewKeyServer(t testing.TB, keys ...Key) *KeyServer {
	t.Helper()
	s := &KeyServer{t: t, fetched: make(chan struct{}, 1)}
	s.SetKeys(keys...)
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *KeyServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.fetches++
	body, down := s.body, s.down
	s.mu.Unlock()
	select {
	case s.fetched <- struct{}{}:
	default:
	}
	if down {
		http.Error(w, "down for the test", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// URL is the key set's address.
func (s *KeyServer) URL() string { return s.srv.URL + "/auth/v1/.well-known/jwks.json" }

// Base is the server's root, as SUPABASE_URL would name it.
func (s *KeyServer) Base() string { return s.srv.URL }

// SetKeys replaces the keys served from the next fetch on.
func (s *KeyServer) SetKeys(keys ...Key) {
	set := jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{}}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.JWK(s.t))
	}
	body, err := json.Marshal(set)
	if err != nil {
		s.t.Fatal(err)
	}
	s.SetBody(body)
}

// SetBody makes the server answer body, whatever it is.
func (s *KeyServer) SetBody(body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body = body
}

// SetDown makes the server answer 503 (true) or serve again (false).
func (s *KeyServer) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

// Fetches is how many requests the server has had.
func (s *KeyServer) Fetches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetches
}

// WaitFor waits until cond holds, rechecking it after every fetch; it
// fails the test if cond still does not hold after a minute (a generous
// bound: the verifier under test fetches every few milliseconds). Call it
// from the test goroutine.
func (s *KeyServer) WaitFor(what string, cond func() bool) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for !cond() {
		select {
		case <-s.fetched:
		case <-ctx.Done():
			s.t.Fatalf("authtest: gave up waiting for %s after %d fetches", what, s.Fetches())
		}
	}
}

// WaitFetches waits until the server has had at least n requests.
func (s *KeyServer) WaitFetches(n int) {
	s.t.Helper()
	s.WaitFor("fetches", func() bool { return s.Fetches() >= n })
}
