package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql/errcode"

	"chatql/auth"
	"chatql/graph"
)

// Password guessing through the real handler: one signIn or signUp per
// operation, failed sign-ins limited per email and client address and per
// email, sign-ups per address, and bcrypt under a gate that refuses at once
// when full. A refused attempt never reaches bcrypt or the pool, whatever
// its password.

// withEnv is an apiOptions adjustment: environment variables as a
// deployment would set them.
func withEnv(vars map[string]string) func(*apiOptions) {
	return func(o *apiOptions) {
		if o.env == nil {
			o.env = map[string]string{}
		}
		for k, v := range vars {
			o.env[k] = v
		}
	}
}

// behindProxy trusts the test client's own address as a proxy, so that
// X-Forwarded-For chooses the client address of each request.
var behindProxy = withEnv(map[string]string{"TRUSTED_PROXIES": "127.0.0.1/32"})

// postFrom posts query as the client at address xff ("" sends no
// X-Forwarded-For: the client is the test's own address).
func (a *testAPI) postFrom(xff, query string, vars map[string]any) *gqlResponse {
	a.t.Helper()
	b, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		a.t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, a.srv.URL+"/query", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	return a.decode(a.do(req))
}

// signInAs tries email and password from address xff.
func (a *testAPI) signInAs(xff, email, password string) *gqlResponse {
	a.t.Helper()
	return a.postFrom(xff, signIn, map[string]any{"email": email, "password": password})
}

// expectRateLimited checks that r is RATE_LIMITED: HTTP 429, a
// Retry-After of 1 to maxWait seconds, the same in extensions.retryAfter,
// one error and no data. It returns the Retry-After.
func expectRateLimited(t *testing.T, name string, r *gqlResponse, maxWait time.Duration) int {
	t.Helper()
	expectCode(t, name, r, graph.CodeRateLimited, "")
	if len(r.Errors) != 1 {
		t.Errorf("%s: %d errors, want 1: %.300s", name, len(r.Errors), r.Raw)
	}
	if r.Status != http.StatusTooManyRequests {
		t.Errorf("%s: HTTP %d, want 429: %.300s", name, r.Status, r.Raw)
	}
	if len(r.Data) != 0 && string(r.Data) != "null" {
		t.Errorf("%s: refused operation has data: %.300s", name, r.Data)
	}
	wait, err := strconv.Atoi(r.Header.Get("Retry-After"))
	if err != nil || wait < 1 || time.Duration(wait)*time.Second > maxWait {
		t.Errorf("%s: Retry-After %q, want 1 to %v", name, r.Header.Get("Retry-After"), maxWait)
	}
	var body struct {
		Errors []struct {
			Extensions struct {
				RetryAfter int `json:"retryAfter"`
			} `json:"extensions"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(r.Raw, &body); err != nil || len(body.Errors) == 0 || body.Errors[0].Extensions.RetryAfter != wait {
		t.Errorf("%s: extensions.retryAfter differs from Retry-After %d: %.300s", name, wait, r.Raw)
	}
	return wait
}

// expectBadCredentials checks that r is a plain wrong-password answer.
func expectBadCredentials(t *testing.T, name string, r *gqlResponse) {
	t.Helper()
	expectCode(t, name, r, graph.CodeUnauthenticated, "")
	if r.Status != http.StatusOK {
		t.Errorf("%s: HTTP %d, want 200", name, r.Status)
	}
}

// signInAliases is a mutation of n aliased signIns for email, the last
// with password right and the others wrong.
func signInAliases(n int, email, right string) string {
	var b strings.Builder
	b.WriteString("mutation {")
	for i := range n {
		pw := fmt.Sprintf("wrong-%d", i)
		if i == n-1 {
			pw = right
		}
		fmt.Fprintf(&b, " a%d: signIn(input: {email: %q, password: %q}) { token }", i, email, pw)
	}
	b.WriteString(" }")
	return b.String()
}

// TestSignInAliasesRefused: more than one signIn or signUp in an operation
// (aliases, fragments, the two mixed) is a request error before anything
// runs: no connection, no bcrypt (the gate is held: a check would be
// refused with RATE_LIMITED instead), one error that says nothing of any
// password. Fields that will not run (@skip) do not count.
func TestSignInAliasesRefused(t *testing.T) {
	t.Parallel()
	gate := auth.NewPasswords(1, 0)
	a := newAPI(t, func(o *apiOptions) { o.passwords = gate })
	a.userWithPassword("Ann")
	a.waitReleased()
	signUpFields := `signUp(input: {email: "new@example.com", password: "long enough", displayName: "New"}) { token }`
	release, err := gate.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	acquires := a.pool.Stats().AcquireCount
	for _, tc := range []struct{ name, query string }{
		{"100 aliases", signInAliases(100, "ann@example.com", "password-Ann")},
		{"2 aliases", signInAliases(2, "ann@example.com", "password-Ann")},
		{"signIn and signUp", `mutation { signIn(input: {email: "ann@example.com", password: "password-Ann"}) { token } ` + signUpFields + ` }`},
		{"through fragments", `mutation { ...A ...B } fragment A on Mutation { a: signIn(input: {email: "ann@example.com", password: "x"}) { token } }
			fragment B on Mutation { b: signIn(input: {email: "ann@example.com", password: "password-Ann"}) { token } }`},
		{"2 signUps", `mutation { a: ` + signUpFields + ` b: ` + signUpFields + ` }`},
	} {
		start := time.Now()
		r := a.post("", tc.query, nil)
		expectRequestError(t, tc.name, r, errcode.ValidationFailed)
		if len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Message, "at most one signIn or signUp per operation") {
			t.Errorf("%s: want one error saying at most one signIn or signUp: %.300s", tc.name, r.Raw)
		}
		t.Logf("%s: refused in %v", tc.name, time.Since(start).Round(time.Microsecond))
	}
	if got := a.pool.Stats().AcquireCount; got != acquires {
		t.Errorf("refused operations borrowed %d connections", got-acquires)
	}
	release()

	// What will run is what counts: a skipped second alias is no second
	// sign-in, and two identical fields merge into one.
	r := a.post("", `mutation { a: signIn(input: {email: "ann@example.com", password: "password-Ann"}) { token }
		b: signIn(input: {email: "ann@example.com", password: "x"}) @skip(if: true) { token } }`, nil)
	if !r.ok() {
		t.Errorf("one signIn and a skipped one: %.300s", r.Raw)
	}
	r = a.post("", `mutation { signIn(input: {email: "ann@example.com", password: "password-Ann"}) { token }
		signIn(input: {email: "ann@example.com", password: "password-Ann"}) { user { id } } }`, nil)
	if !r.ok() {
		t.Errorf("one signIn written twice: %.300s", r.Raw)
	}
}

// TestSignInFailuresLimited: from one address, the first 10 wrong
// passwords are UNAUTHENTICATED and the next 20 RATE_LIMITED (429, with
// Retry-After), without a connection or bcrypt; so is the right password
// from that address. The owner at another address signs in.
func TestSignInFailuresLimited(t *testing.T) {
	t.Parallel()
	a := newAPI(t, behindProxy)
	a.userWithPassword("Ann")
	const attacker, owner = "198.51.100.1", "2001:db8:1:2::7"

	for i := range 10 {
		expectBadCredentials(t, fmt.Sprintf("wrong password %d", i+1), a.signInAs(attacker, "ann@example.com", fmt.Sprint("wrong-", i)))
	}
	a.waitReleased()
	acquires := a.pool.Stats().AcquireCount
	start := time.Now()
	for i := 10; i < 30; i++ {
		// The email in another case and with spaces is the same email.
		expectRateLimited(t, fmt.Sprintf("wrong password %d", i+1), a.signInAs(attacker, " ANN@example.com", fmt.Sprint("wrong-", i)), 15*time.Minute)
	}
	expectRateLimited(t, "the right password from the limited address", a.signInAs(attacker, "ann@example.com", "password-Ann"), 15*time.Minute)
	t.Logf("21 limited attempts in %v", time.Since(start).Round(time.Millisecond))
	if got := a.pool.Stats().AcquireCount; got != acquires {
		t.Errorf("limited attempts borrowed %d connections", got-acquires)
	}

	// The owner elsewhere (an IPv6 address; its /64 is one client), and
	// another email from the attacker's address, are not limited.
	if r := a.signInAs(owner, "ann@example.com", "password-Ann"); !r.ok() {
		t.Errorf("the owner at another address: %.300s", r.Raw)
	}
	expectBadCredentials(t, "another email from the limited address", a.signInAs(attacker, "bob@example.com", "whatever"))
	// The test's own address, with no forwarding header, is another client.
	expectBadCredentials(t, "the proxy itself", a.signInAs("", "ann@example.com", "wrong"))

}

// TestSignInSuccessForgetsFailures: a successful sign-in forgets its
// address's failures for that email (its owner is back), so typos before
// it do not add up with typos after.
func TestSignInSuccessForgetsFailures(t *testing.T) {
	t.Parallel()
	a := newAPI(t, withEnv(map[string]string{"SIGNIN_MAX_FAILURES": "2"}))
	a.userWithPassword("Ann")
	expectBadCredentials(t, "a typo", a.signInAs("", "ann@example.com", "typo"))
	if r := a.signInAs("", "ann@example.com", "password-Ann"); !r.ok() {
		t.Fatalf("the right password: %.300s", r.Raw)
	}
	expectBadCredentials(t, "a typo after signing in", a.signInAs("", "ann@example.com", "typo"))
	expectBadCredentials(t, "a second typo after signing in", a.signInAs("", "ann@example.com", "typo"))
	expectRateLimited(t, "a third typo after signing in", a.signInAs("", "ann@example.com", "typo"), 15*time.Minute)
}

// TestSignInPerEmailCap: failures from many addresses add up per email;
// at the cap every address is refused for that email, its owner's right
// password included, and other emails are not.
func TestSignInPerEmailCap(t *testing.T) {
	t.Parallel()
	a := newAPI(t, behindProxy, withEnv(map[string]string{
		"SIGNIN_MAX_FAILURES": "2", "SIGNIN_MAX_FAILURES_PER_EMAIL": "5", "SIGNIN_WINDOW": "10m",
	}))
	a.userWithPassword("Ann")
	a.userWithPassword("Bob")
	for i := range 5 {
		addr := fmt.Sprintf("203.0.113.%d", i/2+1) // 2, 2 and 1 from three addresses
		expectBadCredentials(t, fmt.Sprintf("failure %d", i+1), a.signInAs(addr, "ann@example.com", "wrong"))
	}
	expectRateLimited(t, "a fourth address", a.signInAs("203.0.113.4", "ann@example.com", "wrong"), 10*time.Minute)
	expectRateLimited(t, "the owner's right password", a.signInAs("192.0.2.10", "ann@example.com", "password-Ann"), 10*time.Minute)
	if r := a.signInAs("203.0.113.4", "bob@example.com", "password-Bob"); !r.ok() {
		t.Errorf("another email: %.300s", r.Raw)
	}
}

// TestSignUpsPerAddress: an address may attempt SIGNUP_MAX_PER_ADDRESS
// sign-ups per hour; invalid input hashes nothing and does not count; the
// next is RATE_LIMITED and stores nothing; other addresses are not
// limited.
func TestSignUpsPerAddress(t *testing.T) {
	t.Parallel()
	a := newAPI(t, behindProxy, withEnv(map[string]string{"SIGNUP_MAX_PER_ADDRESS": "2"}))
	up := func(xff, name, password string) *gqlResponse {
		return a.postFrom(xff, signUp, map[string]any{"in": map[string]any{
			"email": strings.ToLower(name) + "@example.com", "password": password, "displayName": name}})
	}
	const addr = "198.51.100.20"
	expectCode(t, "a short password", up(addr, "Short", "short"), graph.CodeBadUserInput, "password")
	for _, name := range []string{"Ann", "Bob"} {
		if r := up(addr, name, "long enough"); !r.ok() {
			t.Fatalf("sign-up %s: %.300s", name, r.Raw)
		}
	}
	before := a.rows()
	wait := expectRateLimited(t, "a third sign-up", up(addr, "Cat", "long enough"), time.Hour)
	if wait < 3500 {
		t.Errorf("Retry-After %d s, want about an hour", wait)
	}
	a.expectRows("a refused sign-up", before)
	if r := up("198.51.100.21", "Cat", "long enough"); !r.ok() {
		t.Errorf("sign-up from another address: %.300s", r.Raw)
	}
}

// TestPasswordGateFull: with the bcrypt gate full (one slot, no queue,
// held here), signIn and signUp are refused at once with RATE_LIMITED,
// 429 and Retry-After 1, before borrowing a connection; the refused
// attempts do not count as failures.
func TestPasswordGateFull(t *testing.T) {
	t.Parallel()
	gate := auth.NewPasswords(1, 0)
	a := newAPI(t, func(o *apiOptions) { o.passwords = gate }, withEnv(map[string]string{"SIGNIN_MAX_FAILURES": "1"}))
	a.userWithPassword("Ann")
	a.waitReleased()
	release, err := gate.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	acquires := a.pool.Stats().AcquireCount
	for i := range 3 {
		r := a.signInAs("", "ann@example.com", "wrong")
		if wait := expectRateLimited(t, fmt.Sprintf("sign-in %d with the gate full", i+1), r, time.Second); wait != 1 {
			t.Errorf("Retry-After %d, want 1", wait)
		}
	}
	expectRateLimited(t, "sign-in of an unknown email with the gate full", a.signInAs("", "nobody@example.com", "wrong"), time.Second)
	expectRateLimited(t, "sign-up with the gate full", a.post("", signUp, map[string]any{"in": map[string]any{
		"email": "new@example.com", "password": "long enough", "displayName": "New"}}), time.Second)
	if got := a.pool.Stats().AcquireCount; got != acquires {
		t.Errorf("attempts refused by the gate borrowed %d connections", got-acquires)
	}
	release()

	// None of those counted: one failure is still allowed, then the limit.
	expectBadCredentials(t, "a wrong password once the gate is free", a.signInAs("", "ann@example.com", "wrong"))
	expectRateLimited(t, "the second failure", a.signInAs("", "ann@example.com", "wrong"), 15*time.Minute)
}
