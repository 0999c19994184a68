package main

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql"

	"chatql/admission"
	"chatql/graph"
	"chatql/web"
)

// gatedMe makes every `me` field aliased noisy or quiet report its alias on
// entered, then wait for gate: the tests decide when operations finish and
// see in which order they were admitted.
func gatedMe(entered chan<- string, gate <-chan struct{}) func(*apiOptions) {
	return func(o *apiOptions) {
		o.fieldMiddleware = func(ctx context.Context, next graphql.Resolver) (any, error) {
			if fc := graphql.GetFieldContext(ctx); fc.Object == "Query" && fc.Field.Name == "me" && fc.Field.Alias != "me" {
				entered <- fc.Field.Alias
				<-gate
			}
			return next(ctx)
		}
	}
}

// withAdmission sets the admission limits as a deployment would.
func withAdmission(perUser, queue, maxConcurrent int, maxWait time.Duration) func(*apiOptions) {
	return func(o *apiOptions) {
		if o.env == nil {
			o.env = map[string]string{}
		}
		o.env["ADMISSION_PER_USER"] = strconv.Itoa(perUser)
		o.env["ADMISSION_QUEUE_PER_USER"] = strconv.Itoa(queue)
		o.env["ADMISSION_MAX_CONCURRENT"] = strconv.Itoa(maxConcurrent)
		o.env["ADMISSION_MAX_WAIT"] = maxWait.String()
	}
}

// waitAdmission waits until the server's admission state satisfies ok.
func (a *testAPI) waitAdmission(what string, ok func(admission.Stats) bool) {
	a.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var st admission.Stats
		a.getJSON("/health/admission", &st)
		if ok(st) {
			return
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("admission never reached %s: %+v", what, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// postAsync posts query as token's bearer in a goroutine.
func (a *testAPI) postAsync(token, query string) <-chan *gqlResponse {
	ch := make(chan *gqlResponse, 1)
	go func() {
		r, err := a.client.query(context.Background(), token, query, nil)
		if err != nil {
			a.t.Errorf("POST: %v", err)
		}
		ch <- r
	}()
	return ch
}

func expectEntered(t *testing.T, entered <-chan string, want string) {
	t.Helper()
	select {
	case got := <-entered:
		if got != want {
			t.Fatalf("%s admitted, want %s", got, want)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("nothing admitted, want %s", want)
	}
}

// TestAdmissionFairAndEarly: one user floods (its share running, its queue
// full); the flood's excess is refused at once with 429 RATE_LIMITED and a
// Retry-After, while the server is full; another user's request arriving
// then is the next admitted when a slot frees, ahead of the flood's queue.
func TestAdmissionFairAndEarly(t *testing.T) {
	t.Parallel()
	entered, gate := make(chan string, 16), make(chan struct{})
	a := newAPI(t, gatedMe(entered, gate), withAdmission(2, 2, 2, time.Minute))
	_, noisy := a.user("Noisy")
	_, quiet := a.user("Quiet")

	var results []<-chan *gqlResponse
	for range 2 {
		results = append(results, a.postAsync(noisy, `{ noisy: me { id } }`))
	}
	expectEntered(t, entered, "noisy")
	expectEntered(t, entered, "noisy")
	for range 2 {
		results = append(results, a.postAsync(noisy, `{ noisy: me { id } }`))
	}
	a.waitAdmission("the flood's queue full", func(st admission.Stats) bool { return st.Queued == 2 })

	// Refused at once: two of its operations are blocked and nothing
	// finishes until the gate opens.
	// The refusal is in the type the client negotiated, without data.
	r := a.postAccept(web.MediaGraphQLResponse, noisy, map[string]any{"query": `{ noisy: me { id } }`})
	if r.Status != http.StatusTooManyRequests || r.code(t) != graph.CodeRateLimited || r.Header.Get("Retry-After") == "" {
		t.Fatalf("flood's excess: HTTP %d Retry-After %q: %s", r.Status, r.Header.Get("Retry-After"), r.Raw)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, web.MediaGraphQLResponse) || strings.Contains(string(r.Raw), `"data"`) {
		t.Errorf("flood's excess: Content-Type %q, body %s; want %s without data", ct, r.Raw, web.MediaGraphQLResponse)
	}

	results = append(results, a.postAsync(quiet, `{ quiet: me { id } }`))
	a.waitAdmission("the quiet user waiting", func(st admission.Stats) bool { return st.Queued == 3 && st.Waiting == 2 })
	gate <- struct{}{}
	expectEntered(t, entered, "quiet")

	close(gate)
	for _, ch := range results {
		if r := <-ch; r == nil || !r.ok() {
			t.Errorf("admitted operation failed: %+v", r)
		}
	}
	for range 2 {
		expectEntered(t, entered, "noisy")
	}
	var st admission.Stats
	a.getJSON("/health/admission", &st)
	if st.Admitted != 5 || st.Queued != 0 || st.RefusedQueueFull != 1 || st.Running != 0 {
		t.Errorf("admission stats %+v", st)
	}
}

// TestAdmissionRefusedAtBound: an operation still waiting at its budget
// (ADMISSION_MAX_WAIT less the service time, at least half of it) is
// refused then: 429 when its user's own share was full, 503 OVERLOADED
// when the server's was; neither waits longer.
func TestAdmissionRefusedAtBound(t *testing.T) {
	t.Parallel()
	entered, gate := make(chan string, 16), make(chan struct{})
	const bound = 300 * time.Millisecond
	a := newAPI(t, gatedMe(entered, gate), withAdmission(1, 4, 1, bound))
	_, noisy := a.user("Noisy")
	_, quiet := a.user("Quiet")
	first := a.postAsync(noisy, `{ noisy: me { id } }`)
	expectEntered(t, entered, "noisy")

	start := time.Now()
	own := a.postAsync(noisy, `{ noisy: me { id } }`)
	server := a.postAsync(quiet, `{ quiet: me { id } }`)
	for _, tc := range []struct {
		ch     <-chan *gqlResponse
		status int
		code   string
	}{
		{own, http.StatusTooManyRequests, graph.CodeRateLimited},
		{server, http.StatusServiceUnavailable, graph.CodeOverloaded},
	} {
		r := <-tc.ch
		if r.Status != tc.status || r.code(t) != tc.code || r.Header.Get("Retry-After") == "" {
			t.Errorf("queued past the bound: HTTP %d %s Retry-After %q, want %d %s", r.Status, r.Raw, r.Header.Get("Retry-After"), tc.status, tc.code)
		}
	}
	if waited := time.Since(start); waited < bound/2 {
		t.Errorf("refused after %v, before the budget's floor %v", waited, bound/2)
	}
	close(gate)
	if r := <-first; !r.ok() {
		t.Fatalf("admitted operation: %s", r.Raw)
	}
	var st admission.Stats
	a.getJSON("/health/admission", &st)
	if st.Expired != 2 || st.RefusedPrincipalBusy != 1 || st.RefusedServerBusy != 1 {
		t.Errorf("admission stats %+v", st)
	}
}

// TestAdmissionWebsocket: a websocket's operations are admitted one by one
// under the socket's user, and its subscriptions count against
// SUBSCRIPTIONS_PER_USER; another user is not affected.
func TestAdmissionWebsocket(t *testing.T) {
	t.Parallel()
	a := newAPI(t, func(o *apiOptions) {
		o.env = map[string]string{"SUBSCRIPTIONS_PER_USER": "2"}
	})
	_, ann := a.user("Ann")
	_, bob := a.user("Bob")
	c := connectWS(t, a.srv.URL, ann)
	c.subscribe("1", 10000)
	c.subscribe("2", 10000)
	for range 2 {
		if m := c.next(time.Now().Add(10 * time.Second)); m.Type != "next" {
			t.Fatalf("subscription %s: %s %s", m.ID, m.Type, m.Payload)
		}
	}
	c.subscribe("3", 10000)
	if code := c.subscriptionError("3"); code != graph.CodeRateLimited {
		t.Fatalf("third subscription: %s, want %s", code, graph.CodeRateLimited)
	}
	other := connectWS(t, a.srv.URL, bob)
	other.subscribe("1", 10000)
	if m := other.next(time.Now().Add(10 * time.Second)); m.Type != "next" {
		t.Fatalf("another user's subscription: %s %s", m.Type, m.Payload)
	}
	// Ending one makes room again.
	c.sendJSON("1", "complete", nil)
	a.waitAdmission("one subscription ended", func(st admission.Stats) bool { return st.Subscriptions == 2 })
	c.subscribe("4", 10000)
	m := c.next(time.Now().Add(10 * time.Second))
	for m.ID == "1" { // the server's complete for the one ended
		m = c.next(time.Now().Add(10 * time.Second))
	}
	if m.Type != "next" || m.ID != "4" {
		t.Fatalf("subscription after one ended: %s %s %s", m.ID, m.Type, m.Payload)
	}
	var st admission.Stats
	a.getJSON("/health/admission", &st)
	if st.RefusedSubscriptions != 1 || st.Admitted < 4 {
		t.Errorf("admission stats %+v", st)
	}
}
