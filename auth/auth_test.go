package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"chatql/auth"
)

func TestVerify(t *testing.T) {
	tok := newTokens(t)
	now := time.Now()
	hs256 := jwt.SigningMethodHS256

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	cq := chatqlClaims(now)
	sb := supabaseClaims(now)
	exp := time.Unix(now.Add(time.Hour).Unix(), 0)

	tests := []struct {
		name  string
		token string
		// want is the identity for an accepted token; reason, for a
		// refused one, is a fragment of the error naming which check
		// failed.
		want   auth.Identity
		reason string
	}{
		{
			name:  "chatql token",
			token: sign(t, hs256, secret, cq),
			want:  auth.Identity{UserID: testUserID, ExpiresAt: exp},
		},
		{
			name:  "chatql token with uppercase sub is canonicalised",
			token: sign(t, hs256, secret, with(cq, "sub", strings.ToUpper(testUserID))),
			want:  auth.Identity{UserID: testUserID, ExpiresAt: exp},
		},
		{
			name:  "supabase token",
			token: sign(t, hs256, secret, sb),
			want: auth.Identity{
				UserID: testUserID, Supabase: true, Email: "ada@example.com",
				Name: "Ada Lovelace", ExpiresAt: exp,
			},
		},
		{
			name:  "supabase token with aud array and name fallback",
			token: sign(t, hs256, secret, with(sb, "aud", []string{"authenticated"}, "user_metadata", map[string]any{"full_name": 7, "display_name": "Ada"})),
			want:  auth.Identity{UserID: testUserID, Supabase: true, Email: "ada@example.com", Name: "Ada", ExpiresAt: exp},
		},
		{
			name:  "supabase token without email or metadata",
			token: sign(t, hs256, secret, with(sb, "email", nil, "user_metadata", nil)),
			want:  auth.Identity{UserID: testUserID, Supabase: true, ExpiresAt: exp},
		},
		{
			name:  "local supabase issuer",
			token: sign(t, hs256, secret, with(sb, "iss", "http://127.0.0.1:54321/auth/v1")),
			want: auth.Identity{
				UserID: testUserID, Supabase: true, Email: "ada@example.com",
				Name: "Ada Lovelace", ExpiresAt: exp,
			},
		},
		{
			name:  "within leeway of expiry",
			token: sign(t, hs256, secret, with(cq, "exp", now.Add(-10*time.Second).Unix())),
			want:  auth.Identity{UserID: testUserID, ExpiresAt: time.Unix(now.Add(-10*time.Second).Unix(), 0)},
		},

		{name: "expired", token: sign(t, hs256, secret, with(cq, "exp", now.Add(-time.Hour).Unix())), reason: "token expired"},
		{name: "missing exp", token: sign(t, hs256, secret, with(cq, "exp", nil)), reason: "missing exp"},
		{name: "nbf in the future", token: sign(t, hs256, secret, with(cq, "nbf", now.Add(10*time.Minute).Unix())), reason: "not valid yet"},
		{name: "iat in the future", token: sign(t, hs256, secret, with(cq, "iat", now.Add(10*time.Minute).Unix())), reason: "issued in the future"},
		{name: "wrong secret", token: sign(t, hs256, []byte("another-secret-that-is-long-enough-32"), cq), reason: "wrong signature"},
		{name: "alg none", token: unsigned(t, cq), reason: "unexpected signing method none"},
		{name: "HS384 with the right secret", token: sign(t, jwt.SigningMethodHS384, secret, cq), reason: "unexpected signing method HS384"},
		{name: "HS512 with the right secret", token: sign(t, jwt.SigningMethodHS512, secret, cq), reason: "unexpected signing method HS512"},
		{name: "RS256", token: sign(t, jwt.SigningMethodRS256, rsaKey, cq), reason: "unexpected signing method RS256"},
		{name: "ES256", token: sign(t, jwt.SigningMethodES256, ecKey, cq), reason: "unexpected signing method ES256"},
		{name: "tampered payload", token: tamper(t, sign(t, hs256, secret, cq), with(cq, "sub", "00000000-0000-4000-8000-000000000000")), reason: "wrong signature"},
		{name: "empty", token: "", reason: "malformed"},
		{name: "one segment", token: "abc", reason: "malformed"},
		{name: "three junk segments", token: "a.b.c", reason: "malformed"},
		{name: "Bearer prefix left on", token: "Bearer " + sign(t, hs256, secret, cq), reason: "malformed"},
		{name: "chatql sub not a uuid", token: sign(t, hs256, secret, with(cq, "sub", "42")), reason: "not a uuid"},
		{name: "chatql sub missing", token: sign(t, hs256, secret, with(cq, "sub", nil)), reason: "not a uuid"},
		{name: "missing issuer", token: sign(t, hs256, secret, with(cq, "iss", nil)), reason: "unknown issuer"},
		{name: "other issuer", token: sign(t, hs256, secret, with(cq, "iss", "https://evil.example")), reason: "unknown issuer"},
		{name: "supabase anon role", token: sign(t, hs256, secret, with(sb, "role", "anon")), reason: "role"},
		{name: "supabase service_role", token: sign(t, hs256, secret, with(sb, "role", "service_role")), reason: "role"},
		{name: "supabase missing role", token: sign(t, hs256, secret, with(sb, "role", nil)), reason: "role"},
		{name: "supabase wrong aud", token: sign(t, hs256, secret, with(sb, "aud", "anon")), reason: "audience"},
		{name: "supabase missing aud", token: sign(t, hs256, secret, with(sb, "aud", nil)), reason: "audience"},
		{name: "supabase sub not a uuid", token: sign(t, hs256, secret, with(sb, "sub", "user-1")), reason: "not a uuid"},
		{name: "supabase expired", token: sign(t, hs256, secret, with(sb, "exp", now.Add(-time.Hour).Unix())), reason: "token expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tok.Verify(t.Context(), tt.token)
			if tt.reason != "" {
				if !errors.Is(err, auth.ErrUnauthenticated) {
					t.Fatalf("Verify err = %v, want ErrUnauthenticated", err)
				}
				if !strings.Contains(err.Error(), tt.reason) {
					t.Errorf("Verify err = %q, want it to say %q", err, tt.reason)
				}
				if got != (auth.Identity{}) {
					t.Errorf("Verify identity = %+v on error, want zero", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !got.ExpiresAt.Equal(tt.want.ExpiresAt) {
				t.Errorf("ExpiresAt = %v, want %v", got.ExpiresAt, tt.want.ExpiresAt)
			}
			got.ExpiresAt, tt.want.ExpiresAt = time.Time{}, time.Time{}
			if got != tt.want {
				t.Errorf("Verify = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestIssueRoundTrip(t *testing.T) {
	t.Parallel()
	tok := newTokens(t)
	before := time.Now().Truncate(time.Second)

	raw, expiresAt, err := tok.Issue(strings.ToUpper(testUserID))
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	if expiresAt.Before(before.Add(ttl)) || expiresAt.After(time.Now().Add(ttl)) {
		t.Errorf("expiresAt = %v, want about now+%v", expiresAt, ttl)
	}

	id, err := tok.Verify(t.Context(), raw)
	if err != nil {
		t.Fatalf("Verify(Issue()): %v", err)
	}
	want := auth.Identity{UserID: testUserID, ExpiresAt: expiresAt}
	if id.UserID != want.UserID || id.Supabase || id.Email != "" || id.Name != "" || !id.ExpiresAt.Equal(want.ExpiresAt) {
		t.Errorf("Verify(Issue()) = %+v, want %+v", id, want)
	}

	// The claims are the documented ones, readable by anyone holding the
	// secret.
	var c jwt.RegisteredClaims
	if _, err := jwt.ParseWithClaims(raw, &c, func(*jwt.Token) (any, error) { return secret, nil },
		jwt.WithValidMethods([]string{"HS256"})); err != nil {
		t.Fatalf("parse issued token: %v", err)
	}
	if c.Issuer != "chatql" || c.Subject != testUserID || c.ID == "" || c.IssuedAt == nil || c.ExpiresAt == nil {
		t.Errorf("issued claims = %+v, want iss chatql, sub %s, jti, iat, exp", c, testUserID)
	}

	// Each token gets its own jti.
	raw2, _, err := tok.Issue(testUserID)
	if err != nil {
		t.Fatal(err)
	}
	if raw2 == raw {
		t.Error("two issued tokens are identical; want distinct jti")
	}

	// Another Tokens with a different secret refuses it.
	other, err := auth.NewTokens([]byte("a-completely-different-32-byte-secret!"), ttl)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Verify(t.Context(), raw); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("Verify with another secret: err = %v, want ErrUnauthenticated", err)
	}
}

func TestIssueRejectsNonUUID(t *testing.T) {
	t.Parallel()
	if _, _, err := newTokens(t).Issue("42"); err == nil {
		t.Fatal("Issue(\"42\") succeeded, want error")
	}
}

func TestNewTokens(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		secret  []byte
		ttl     time.Duration
		wantErr bool
	}{
		{"ok", secret, time.Minute, false},
		{"exactly 32 bytes", []byte(strings.Repeat("k", 32)), time.Minute, false},
		{"short secret", []byte(strings.Repeat("k", 31)), time.Minute, true},
		{"nil secret", nil, time.Minute, true},
		{"zero ttl", secret, 0, true},
		{"negative ttl", secret, -time.Minute, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auth.NewTokens(tt.secret, tt.ttl)
			if (err != nil) != tt.wantErr {
				t.Errorf("NewTokens err = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}

func TestNewTokensCopiesSecret(t *testing.T) {
	t.Parallel()
	key := []byte(strings.Repeat("k", 32))
	tok, err := auth.NewTokens(key, ttl)
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := tok.Issue(testUserID)
	if err != nil {
		t.Fatal(err)
	}
	key[0] = 'x'
	if _, err := tok.Verify(t.Context(), raw); err != nil {
		t.Errorf("Verify after caller mutated its secret: %v", err)
	}
}

func TestFromHeader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		header      string
		wantToken   string
		wantPresent bool
		wantErr     bool
	}{
		{header: "", wantPresent: false},
		{header: "   ", wantPresent: false},
		{header: "Bearer abc.def.ghi", wantToken: "abc.def.ghi", wantPresent: true},
		{header: "bearer abc", wantToken: "abc", wantPresent: true},
		{header: "BEARER abc", wantToken: "abc", wantPresent: true},
		{header: "  Bearer   abc  ", wantToken: "abc", wantPresent: true},
		{header: "Bearer", wantPresent: true, wantErr: true},
		{header: "Bearer   ", wantPresent: true, wantErr: true},
		{header: "Basic dXNlcjpwYXNz", wantPresent: true, wantErr: true},
		{header: "abc.def.ghi", wantPresent: true, wantErr: true},
		{header: "Bearer a b", wantPresent: true, wantErr: true},
		{header: "Bearerabc", wantPresent: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			token, present, err := auth.FromHeader(tt.header)
			if tt.wantErr {
				if !errors.Is(err, auth.ErrUnauthenticated) {
					t.Errorf("err = %v, want ErrUnauthenticated", err)
				}
			} else if err != nil {
				t.Errorf("err = %v, want nil", err)
			}
			if token != tt.wantToken || present != tt.wantPresent {
				t.Errorf("FromHeader(%q) = (%q, %v), want (%q, %v)", tt.header, token, present, tt.wantToken, tt.wantPresent)
			}
		})
	}
}

func TestPassword(t *testing.T) {
	t.Parallel()
	const pw = "correct horse battery staple"
	hash, err := auth.HashPassword(pw)
	if err != nil {
		t.Fatalf("HashPassword: %v", err)
	}
	if hash == pw || !strings.HasPrefix(hash, "$2") {
		t.Fatalf("HashPassword = %q, want a bcrypt hash", hash)
	}
	max := strings.Repeat("p", 72)
	maxHash, err := auth.HashPassword(max)
	if err != nil {
		t.Fatalf("HashPassword(72 bytes): %v", err)
	}

	tests := []struct {
		name     string
		hash, pw string
		want     bool
	}{
		{"match", hash, pw, true},
		{"mismatch", hash, pw + "!", false},
		{"empty password", hash, "", false},
		{"malformed hash", "not-a-hash", pw, false},
		{"empty hash", "", pw, false},
		{"72 bytes", maxHash, max, true},
		// bcrypt alone would ignore the 73rd byte and say yes.
		{"73 bytes sharing the first 72", maxHash, max + "x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := auth.CheckPassword(tt.hash, tt.pw); got != tt.want {
				t.Errorf("CheckPassword = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestHashPasswordTooLong(t *testing.T) {
	t.Parallel()
	// 25 three-byte runes: 25 characters, 75 bytes.
	for _, pw := range []string{strings.Repeat("p", 73), strings.Repeat("€", 25)} {
		if _, err := auth.HashPassword(pw); !errors.Is(err, auth.ErrPasswordTooLong) {
			t.Errorf("HashPassword(%d bytes) err = %v, want ErrPasswordTooLong", len(pw), err)
		}
	}
}

func TestDummyCheck(t *testing.T) {
	t.Parallel()
	// It has no result to check; it must not panic, and must cost about
	// what a real check does (a bcrypt comparison is milliseconds, a
	// skipped one microseconds).
	p := auth.NewPasswords(1, 0)
	ctx := context.Background()
	if err := p.DummyCheck(ctx, "warm up the lazily computed hash"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := p.DummyCheck(ctx, "whatever"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < time.Millisecond {
		t.Errorf("DummyCheck took %v; want a real bcrypt comparison", d)
	}
}

// TestPasswordsGate: Hash and Check run under the gate; with every slot
// held and the queue full they fail at once with ErrBusy, a waiting one
// gives up with its context, and released slots serve again.
func TestPasswordsGate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := auth.NewPasswords(1, 1)
	hash, err := p.Hash(ctx, "correct horse")
	if err != nil {
		t.Fatalf("Hash: %v", err)
	}
	if ok, err := p.Check(ctx, hash, "correct horse"); !ok || err != nil {
		t.Fatalf("Check = %v, %v; want true, nil", ok, err)
	}
	if _, err := p.Hash(ctx, strings.Repeat("p", 73)); !errors.Is(err, auth.ErrPasswordTooLong) {
		t.Errorf("Hash(73 bytes) err = %v, want ErrPasswordTooLong", err)
	}

	release, err := p.Acquire(ctx) // the running slot
	if err != nil {
		t.Fatal(err)
	}
	// One may wait in the queue; it gives up with its context.
	waitCtx, cancel := context.WithCancel(ctx)
	waited := make(chan error, 1)
	go func() {
		_, err := p.Check(waitCtx, hash, "correct horse")
		waited <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for p.InGate() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the waiter did not queue: %d in the gate", p.InGate())
		}
		runtime.Gosched()
	}
	if _, err := p.Check(ctx, hash, "correct horse"); !errors.Is(err, auth.ErrBusy) {
		t.Errorf("Check with the gate full: err = %v, want ErrBusy", err)
	}
	if _, err := p.Hash(ctx, "another one"); !errors.Is(err, auth.ErrBusy) {
		t.Errorf("Hash with the gate full: err = %v, want ErrBusy", err)
	}
	if err := p.DummyCheck(ctx, "another one"); !errors.Is(err, auth.ErrBusy) {
		t.Errorf("DummyCheck with the gate full: err = %v, want ErrBusy", err)
	}
	cancel()
	if err := <-waited; !errors.Is(err, context.Canceled) {
		t.Errorf("queued Check err = %v, want context.Canceled", err)
	}
	release()
	release() // idempotent
	if ok, err := p.Check(ctx, hash, "wrong"); ok || err != nil {
		t.Errorf("Check after release = %v, %v; want false, nil", ok, err)
	}
}

// TestPasswordsTurn: Admit takes a place without waiting (ErrBusy when
// the gate is full), Release gives an unused one back, and a turn serves
// once.
func TestPasswordsTurn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := auth.NewPasswords(1, 1)
	t1, err := p.Admit()
	if err != nil {
		t.Fatal(err)
	}
	t2, err := p.Admit()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Admit(); !errors.Is(err, auth.ErrBusy) {
		t.Errorf("third Admit: err = %v, want ErrBusy", err)
	}
	t2.Release()
	t2.Release()
	if n := p.InGate(); n != 1 {
		t.Errorf("InGate after a release = %d, want 1", n)
	}
	if err := t1.DummyCheck(ctx, "whatever"); err != nil {
		t.Errorf("DummyCheck: %v", err)
	}
	if err := t1.DummyCheck(ctx, "again"); err == nil {
		t.Error("a turn used twice: no error")
	}
	t1.Release()
	if n := p.InGate(); n != 0 {
		t.Errorf("InGate after use = %d, want 0", n)
	}
}
