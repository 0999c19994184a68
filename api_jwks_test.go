package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"chatql/auth"
	"chatql/auth/authtest"
	"chatql/graph"
	"chatql/health"
)

// Supabase signing keys end to end: tokens signed with a JWKS's keys
// through the handler, over HTTP and websockets, readiness while the set
// has not loaded, anonymous users and updateProfile.

const updateProfileMutation = `mutation($name: String!) { updateProfile(input: {displayName: $name}) { id displayName email } }`

// withSigningKeys is an apiOptions adjustment: verify with the key set
// srv serves (refetched every few milliseconds) and its issuer. The key
// set stops with the test.
func withSigningKeys(t *testing.T, srv *authtest.KeyServer) (func(*apiOptions), *auth.JWKS) {
	t.Helper()
	j, err := auth.NewJWKS(context.Background(), auth.JWKSConfig{
		URL: srv.URL(), RefreshInterval: 20 * time.Millisecond, MinRefreshInterval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(j.Close)
	return func(o *apiOptions) {
		o.tokenOptions = []auth.Option{auth.WithJWKS(j), auth.WithIssuer(srv.Base() + "/auth/v1")}
	}, j
}

// waitLoaded waits until j has first loaded.
func waitLoaded(t *testing.T, j *auth.JWKS) {
	t.Helper()
	select {
	case <-j.Loaded():
	case <-time.After(time.Minute):
		t.Fatalf("key set not loaded after a minute: %+v", j.Stats())
	}
}

// projectToken is a Supabase access token of srv's project for sub,
// signed with k.
func projectToken(t *testing.T, srv *authtest.KeyServer, k authtest.Key, sub, email string) string {
	claims := withValues(supabaseClaims(sub, email, ""), "iss", srv.Base()+"/auth/v1")
	return k.Sign(t, claims)
}

// TestSigningKeys: ES256 and RS256 tokens from the project's key set sign
// their users in (provisioned on first use) over HTTP and in a websocket's
// connection_init; the legacy secret still works beside them; another
// issuer does not; the metrics count the key set.
func TestSigningKeys(t *testing.T) {
	t.Parallel()
	ec, rs := authtest.NewKey(t, "ES256", "ec"), authtest.NewKey(t, "RS256", "rsa")
	keys := authtest.NewKeyServer(t, ec, rs)
	opt, j := withSigningKeys(t, keys)
	a := newAPI(t, opt)
	waitLoaded(t, j)

	for _, k := range []authtest.Key{ec, rs} {
		sub := uuid.NewString()
		var data meData
		a.post(projectToken(t, keys, k, sub, k.KID+"@example.com"), meQuery, nil).into(t, &data)
		if data.Me.ID != sub || data.Me.Email == nil || *data.Me.Email != k.KID+"@example.com" {
			t.Errorf("%s: me = %+v", k.Alg, data.Me)
		}
	}

	sub := uuid.NewString()
	c := connectWS(t, a.srv.URL, projectToken(t, keys, ec, sub, "ws@example.com"))
	defer c.close()
	if got, code := whoAmI(t, c, "1"); got != sub {
		t.Errorf("websocket signed in with ES256: me %q (code %s), want %s", got, code, sub)
	}

	legacy := signed(t, jwt.SigningMethodHS256, apiSecret, withValues(supabaseClaims(uuid.NewString(), "", ""), "iss", keys.Base()+"/auth/v1"))
	if r := a.post(legacy, meQuery, nil); !r.ok() {
		t.Errorf("HS256 legacy token with the project's issuer: %s", r.Raw)
	}
	other := withValues(supabaseClaims(uuid.NewString(), "", ""), "iss", "https://other.supabase.co/auth/v1")
	expectUnauthenticated(t, "ES256 token of another issuer", a.post(ec.Sign(t, other), meQuery, nil))
	expectUnauthenticated(t, "HS256 token of another issuer", a.post(signed(t, jwt.SigningMethodHS256, apiSecret, other), meQuery, nil))
	forged := authtest.NewKey(t, "ES256", "ec") // same kid, another key
	expectUnauthenticated(t, "ES256 token signed with a key not in the set", a.post(projectToken(t, keys, forged, uuid.NewString(), ""), meQuery, nil))

	fams := a.scrape("")
	if got := value(t, fams, "chatql_auth_jwks_keys"); got != 2 {
		t.Errorf("chatql_auth_jwks_keys = %v, want 2", got)
	}
	if got := value(t, fams, "chatql_auth_jwks_refreshes_total"); got < 1 {
		t.Errorf("chatql_auth_jwks_refreshes_total = %v, want at least 1", got)
	}
	value(t, fams, "chatql_auth_jwks_refresh_failures_total")
}

// TestRemovedKeyRefusedAtOnce: a token the edge has seen verify names its
// user from memory when it comes again (admission's principal), but the
// operation still verifies it: once its key leaves the set, it is refused.
func TestRemovedKeyRefusedAtOnce(t *testing.T) {
	t.Parallel()
	old, next := authtest.NewKey(t, "ES256", "old"), authtest.NewKey(t, "ES256", "next")
	keys := authtest.NewKeyServer(t, old, next)
	opt, j := withSigningKeys(t, keys)
	a := newAPI(t, opt)
	waitLoaded(t, j)

	token := projectToken(t, keys, old, uuid.NewString(), "rotated@example.com")
	for i := range 2 { // the first is remembered at the edge, the second named from memory
		if r := a.post(token, meQuery, nil); !r.ok() {
			t.Fatalf("request %d with the old key: %s", i+1, r.Raw)
		}
	}
	keys.SetKeys(next)
	keys.WaitFor("the old key gone from the set", func() bool { return j.Stats().Keys == 1 })
	expectUnauthenticated(t, "remembered token whose key was removed", a.post(token, meQuery, nil))
	if r := a.post(projectToken(t, keys, next, uuid.NewString(), ""), meQuery, nil); !r.ok() {
		t.Errorf("token of the key still in the set: %s", r.Raw)
	}
}

// TestSigningKeysDownAtStart: while the key set has never loaded,
// /health/ready says "no signing keys" and asymmetric tokens are refused,
// /health stays 200; once the set loads, both recover.
func TestSigningKeysDownAtStart(t *testing.T) {
	t.Parallel()
	k := authtest.NewKey(t, "ES256", "k")
	keys := authtest.NewKeyServer(t, k)
	keys.SetDown(true)
	opt, j := withSigningKeys(t, keys)
	a := newAPI(t, opt)
	keys.WaitFor("a failed fetch", func() bool { return j.Stats().Failures >= 1 })

	var body map[string]string
	if status := a.getJSON("/health", &body); status != http.StatusOK {
		t.Errorf("/health while the key set is down: %d %v", status, body)
	}
	if status := a.getJSON("/health/ready", &body); status != http.StatusServiceUnavailable || body["reason"] != health.ReasonNoSigningKeys {
		t.Errorf("/health/ready while the key set never loaded: %d %v, want 503 %q", status, body, health.ReasonNoSigningKeys)
	}
	token := projectToken(t, keys, k, uuid.NewString(), "")
	expectUnauthenticated(t, "ES256 before the key set loaded", a.post(token, meQuery, nil))

	keys.SetDown(false)
	waitLoaded(t, j)
	if status := a.getJSON("/health/ready", &body); status != http.StatusOK {
		t.Errorf("/health/ready once loaded: %d %v", status, body)
	}
	if status := a.getJSON("/health", &body); status != http.StatusOK {
		t.Errorf("/health once loaded: %d %v", status, body)
	}
	if r := a.post(token, meQuery, nil); !r.ok() {
		t.Errorf("ES256 once the key set loaded: %s", r.Raw)
	}
}

// TestAnonymousUsers: a Supabase anonymous sign-in is provisioned with a
// generated name and no email, and may rename itself; with
// AUTH_ALLOW_ANONYMOUS=false it is FORBIDDEN.
func TestAnonymousUsers(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	sub := uuid.NewString()
	anon := signed(t, jwt.SigningMethodHS256, apiSecret, withValues(supabaseClaims(sub, "", ""), "email", "", "is_anonymous", true, "user_metadata", map[string]any{}))
	var data meData
	a.post(anon, meQuery, nil).into(t, &data)
	if data.Me.ID != sub || data.Me.Email != nil || data.Me.DisplayName != "Guest "+sub[:8] {
		t.Errorf("anonymous me = %+v, want id %s, email null, a generated name", data.Me, sub)
	}
	if n := a.count("SELECT count(*) FROM users WHERE id = $1 AND email IS NULL", sub); n != 1 {
		t.Errorf("%d rows with a NULL email for the anonymous user, want 1", n)
	}
	var renamed struct{ UpdateProfile userJSON }
	a.post(anon, updateProfileMutation, map[string]any{"name": "  Wanda  "}).into(t, &renamed)
	if renamed.UpdateProfile.DisplayName != "Wanda" || renamed.UpdateProfile.Email != nil {
		t.Errorf("updateProfile of the anonymous user: %+v", renamed.UpdateProfile)
	}

	off := newAPI(t, func(o *apiOptions) { o.refuseAnonymous = true })
	r := off.post(anon, meQuery, nil)
	if codes := r.codes(); len(codes) != 1 || codes[0] != graph.CodeForbidden || !strings.Contains(string(r.Raw), "anonymous") {
		t.Errorf("anonymous with AUTH_ALLOW_ANONYMOUS=false: %s, want FORBIDDEN naming anonymous sign-ins", r.Raw)
	}
}

// TestUpdateProfile: any signed-in user changes their own display name,
// by signUp's rules.
func TestUpdateProfile(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	id, token := a.user("ann")
	var got struct{ UpdateProfile userJSON }
	a.post(token, updateProfileMutation, map[string]any{"name": " Ann Again "}).into(t, &got)
	if got.UpdateProfile.ID != id || got.UpdateProfile.DisplayName != "Ann Again" || got.UpdateProfile.Email == nil {
		t.Errorf("updateProfile = %+v", got.UpdateProfile)
	}
	var me meData
	a.post(token, meQuery, nil).into(t, &me)
	if me.Me.DisplayName != "Ann Again" {
		t.Errorf("me after updateProfile: %+v", me.Me)
	}
	for name, displayName := range map[string]string{"blank": "   ", "too long": strings.Repeat("x", 81)} {
		expectCode(t, name, a.post(token, updateProfileMutation, map[string]any{"name": displayName}), graph.CodeBadUserInput, "")
	}
	expectUnauthenticated(t, "updateProfile without sign-in", a.post("", updateProfileMutation, map[string]any{"name": "Nobody"}))
}
