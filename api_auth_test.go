package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"chatql/graph"
)

// Tokens and sign-in, end to end: which Authorization headers sign a
// request in, Supabase users, signUp and signIn.

type meData struct{ Me userJSON }

// supabaseClaims are the claims of a Supabase access token of a signed-in
// user, valid for an hour.
func supabaseClaims(sub, email, fullName string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss":           "https://abc.supabase.co/auth/v1",
		"aud":           "authenticated",
		"role":          "authenticated",
		"sub":           sub,
		"email":         email,
		"user_metadata": map[string]any{"full_name": fullName},
		"iat":           now.Unix(),
		"exp":           now.Add(time.Hour).Unix(),
	}
}

// unsignedToken builds an alg "none" token by hand: header, claims and an
// empty signature.
func unsignedToken(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc(payload) + "."
}

// expectUnauthenticated checks that r refused to sign anyone in.
func expectUnauthenticated(t *testing.T, name string, r *gqlResponse) {
	t.Helper()
	if r.Status != http.StatusOK || len(r.Errors) != 1 || r.Errors[0].Extensions.Code != graph.CodeUnauthenticated {
		t.Errorf("%s: HTTP %d, codes %v, want one UNAUTHENTICATED: %s", name, r.Status, r.codes(), r.Raw)
	}
	if string(r.Data) != "null" {
		t.Errorf("%s: data %s, want null", name, r.Data)
	}
}

// TestAuthRejectedTokens: `me` refuses every Authorization header that
// does not prove a chatql user, with UNAUTHENTICATED.
func TestAuthRejectedTokens(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	ann, annToken := a.user("Ann")
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	valid := chatqlClaims(ann)
	now := time.Now()
	ghost, _, err := a.tokens.Issue(uuid.NewString())
	if err != nil {
		t.Fatal(err)
	}

	// The control: Ann's own token, also with the scheme in lower case.
	for _, h := range []string{"Bearer " + annToken, "bearer " + annToken, "Bearer " + signed(t, jwt.SigningMethodHS256, apiSecret, valid)} {
		var data meData
		a.postAuth(h, meQuery, nil).into(t, &data)
		if data.Me.ID != ann {
			t.Fatalf("control %.20s...: me %+v", h, data.Me)
		}
	}

	for _, tc := range []struct{ name, header string }{
		{"expired", "Bearer " + signed(t, jwt.SigningMethodHS256, apiSecret, withValues(valid, "iat", now.Add(-2*time.Hour).Unix(), "exp", now.Add(-time.Hour).Unix()))},
		{"wrong secret", "Bearer " + signed(t, jwt.SigningMethodHS256, []byte("another-secret-0123456789abcdef-0123456789"), valid)},
		{"alg none", "Bearer " + unsignedToken(t, valid)},
		{"RS256", "Bearer " + signed(t, jwt.SigningMethodRS256, rsaKey, valid)},
		{"HS512 with the right secret", "Bearer " + signed(t, jwt.SigningMethodHS512, apiSecret, valid)},
		{"no exp", "Bearer " + signed(t, jwt.SigningMethodHS256, apiSecret, withValues(valid, "exp", nil))},
		{"issued in the future", "Bearer " + signed(t, jwt.SigningMethodHS256, apiSecret, withValues(valid, "iat", now.Add(time.Hour).Unix()))},
		{"not valid yet", "Bearer " + signed(t, jwt.SigningMethodHS256, apiSecret, withValues(valid, "nbf", now.Add(time.Hour).Unix()))},
		{"unknown issuer", "Bearer " + signed(t, jwt.SigningMethodHS256, apiSecret, withValues(valid, "iss", "someone-else"))},
		{"sub not a uuid", "Bearer " + signed(t, jwt.SigningMethodHS256, apiSecret, withValues(valid, "sub", "ann"))},
		{"user does not exist", "Bearer " + ghost},
		{"garbage abc", "Bearer abc"},
		{"garbage a.b.c", "Bearer a.b.c"},
		{"empty bearer", "Bearer "},
		{"two tokens", "Bearer " + annToken + " " + annToken},
		{"token without scheme", annToken},
		{"Basic", "Basic xyz"},
		{"no header", ""},
	} {
		expectUnauthenticated(t, tc.name, a.postAuth(tc.header, meQuery, nil))
	}
	if got := a.count("SELECT count(*)::int FROM users"); got != 1 {
		t.Errorf("%d users after rejected tokens, want 1", got)
	}
}

// TestAuthIgnoredWhereNotNeeded: an operation that needs no sign-in runs
// whatever the Authorization header holds.
func TestAuthIgnoredWhereNotNeeded(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	id, _ := a.userWithPassword("Ann") // for signIn
	for _, h := range []string{"Bearer garbage", "Basic xyz", "Bearer a.b.c"} {
		var status struct{ PoolStatus struct{ Status string } }
		a.postAuth(h, "{ poolStatus { status } }", nil).into(t, &status)
		if status.PoolStatus.Status == "" {
			t.Errorf("%s: poolStatus has no status", h)
		}
	}
	var in struct{ SignIn struct{ Token string } }
	a.postAuth("Bearer garbage", `mutation { signIn(input: {email: "ann@example.com", password: "password-Ann"}) { token } }`, nil).into(t, &in)
	var me meData
	a.post(in.SignIn.Token, meQuery, nil).into(t, &me)
	if me.Me.ID != id {
		t.Errorf("signed in as %q, want %q", me.Me.ID, id)
	}
}

// TestSupabaseToken: a Supabase access token signs in its user, who is
// created on the first request, once, however many requests race to be
// first; the name and email come from the token.
func TestSupabaseToken(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	sub := uuid.NewString()
	token := signed(t, jwt.SigningMethodHS256, apiSecret, supabaseClaims(sub, "sue@example.com", "Sue Pabase"))

	const concurrent = 2
	results := make([]*gqlResponse, concurrent)
	errs := make([]error, concurrent)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range concurrent {
		wg.Go(func() {
			<-start
			results[i], errs[i] = a.client.query(context.Background(), token, meQuery, nil)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	for i, r := range append(results, a.post(token, meQuery, nil)) {
		var data meData
		r.into(t, &data)
		if data.Me.ID != sub || data.Me.DisplayName != "Sue Pabase" || data.Me.Email == nil || *data.Me.Email != "sue@example.com" {
			t.Errorf("request %d: me %+v", i, data.Me)
		}
	}
	if got := a.count("SELECT count(*)::int FROM users WHERE id = $1", sub); got != 1 {
		t.Errorf("%d user rows for the Supabase user, want 1", got)
	}
	// The provisioned user has no password: no password signs in as her.
	r := a.post("", `mutation { signIn(input: {email: "sue@example.com", password: ""}) { token } }`, nil)
	expectUnauthenticated(t, "password sign-in of a Supabase user", r)
}

// TestSupabaseRefused: Supabase tokens that are not a signed-in user's,
// or arrive with auto-provisioning off, or claim a taken email, sign no
// one in and create nothing.
func TestSupabaseRefused(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	ann, _ := a.user("Ann")
	for _, tc := range []struct {
		name   string
		claims jwt.MapClaims
		code   string
	}{
		{"anon role", withValues(supabaseClaims(uuid.NewString(), "", ""), "role", "anon"), graph.CodeUnauthenticated},
		{"service role", withValues(supabaseClaims(uuid.NewString(), "", ""), "role", "service_role"), graph.CodeUnauthenticated},
		{"other audience", withValues(supabaseClaims(uuid.NewString(), "x@example.com", "X"), "aud", "anon"), graph.CodeUnauthenticated},
		{"no audience", withValues(supabaseClaims(uuid.NewString(), "x@example.com", "X"), "aud", nil), graph.CodeUnauthenticated},
		// Someone else's email must not sign in as, or beside, its owner.
		{"email of another account", supabaseClaims(uuid.NewString(), "ANN@example.com", "Not Ann"), graph.CodeConflict},
	} {
		r := a.post(signed(t, jwt.SigningMethodHS256, apiSecret, tc.claims), meQuery, nil)
		if code := r.code(t); code != tc.code {
			t.Errorf("%s: code %s, want %s", tc.name, code, tc.code)
		}
		if string(r.Data) != "null" || strings.Contains(string(r.Raw), ann) {
			t.Errorf("%s: %s", tc.name, r.Raw)
		}
	}
	if got := a.count("SELECT count(*)::int FROM users"); got != 1 {
		t.Errorf("%d users, want only Ann", got)
	}

	off := a.replica(t, func(o *apiOptions) { o.autoProvision = false })
	sub := uuid.NewString()
	r := off.post(signed(t, jwt.SigningMethodHS256, apiSecret, supabaseClaims(sub, "sue@example.com", "Sue Pabase")), meQuery, nil)
	expectUnauthenticated(t, "auto-provisioning off", r)
	if got := off.count("SELECT count(*)::int FROM users WHERE id = $1", sub); got != 0 {
		t.Errorf("auto-provisioning off created the user")
	}
}

// TestSignUp: a new account signs in at once; its email is unique
// whatever its case; bad input names the field and stores nothing.
func TestSignUp(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	var up struct {
		SignUp struct {
			Token     string
			ExpiresAt string
			User      userJSON
		}
	}
	a.post("", signUp, map[string]any{"in": map[string]any{
		"email": "New.User@Example.com", "password": "correct horse", "displayName": "  New User  ",
	}}).into(t, &up)
	if up.SignUp.User.ID == "" || up.SignUp.User.DisplayName != "New User" {
		t.Errorf("signUp user %+v", up.SignUp.User)
	}
	if exp := parseTime(t, up.SignUp.ExpiresAt); exp.Before(time.Now().Add(50*time.Minute)) || exp.After(time.Now().Add(61*time.Minute)) {
		t.Errorf("expiresAt %s, want in about an hour", up.SignUp.ExpiresAt)
	}
	var me meData
	a.post(up.SignUp.Token, meQuery, nil).into(t, &me)
	if me.Me.ID != up.SignUp.User.ID || me.Me.DisplayName != "New User" || me.Me.Email == nil || *me.Me.Email != "New.User@Example.com" {
		t.Errorf("me with the new token: %+v", me.Me)
	}

	r := a.post("", signUp, map[string]any{"in": map[string]any{
		"email": "new.user@example.COM", "password": "another password", "displayName": "Impostor",
	}})
	if code := r.code(t); code != graph.CodeConflict {
		t.Errorf("duplicate email: code %s, want CONFLICT", code)
	}
	if got := a.count("SELECT count(*)::int FROM users WHERE lower(email) = 'new.user@example.com'"); got != 1 {
		t.Errorf("%d accounts for the email, want 1", got)
	}

	good := map[string]any{"email": "fresh@example.com", "password": "long enough", "displayName": "Fresh"}
	for _, tc := range []struct {
		name, field string
		value       string
	}{
		{"not an email", "email", "not-an-email"},
		{"short password", "password", "short"},
		{"73-byte password", "password", strings.Repeat("p", 73)},
		{"empty name", "displayName", ""},
		{"blank name", "displayName", "   "},
		{"81-character name", "displayName", strings.Repeat("n", 81)},
	} {
		in := withValues(good, tc.field, tc.value)
		r := a.post("", signUp, map[string]any{"in": map[string]any(in)})
		if code := r.code(t); code != graph.CodeBadUserInput {
			t.Errorf("%s: code %s, want BAD_USER_INPUT", tc.name, code)
		} else if f := r.Errors[0].Extensions.Field; f != tc.field {
			t.Errorf("%s: field %q, want %q", tc.name, f, tc.field)
		}
	}
	if got := a.count("SELECT count(*)::int FROM users"); got != 1 {
		t.Errorf("%d users after rejected sign-ups, want 1", got)
	}
}

// TestSignIn: the right password signs in whatever the email's case; a
// wrong password and an unknown email are both UNAUTHENTICATED.
func TestSignIn(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	ann, _ := a.userWithPassword("Ann")
	for _, email := range []string{"ann@example.com", "ANN@Example.Com"} {
		var in struct {
			SignIn struct {
				Token string
				User  userJSON
			}
		}
		a.post("", signIn, map[string]any{"email": email, "password": "password-Ann"}).into(t, &in)
		if in.SignIn.User.ID != ann {
			t.Errorf("%s: signed in as %q", email, in.SignIn.User.ID)
		}
		var me meData
		a.post(in.SignIn.Token, meQuery, nil).into(t, &me)
		if me.Me.ID != ann {
			t.Errorf("%s: token is for %q", email, me.Me.ID)
		}
	}
	for _, tc := range []struct{ name, email, password string }{
		{"wrong password", "ann@example.com", "password-Bob"},
		{"unknown email", "bob@example.com", "password-Ann"},
	} {
		expectUnauthenticated(t, tc.name, a.post("", signIn, map[string]any{"email": tc.email, "password": tc.password}))
	}
}
