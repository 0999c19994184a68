package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"chatql/graph"
	"chatql/web"
)

// The Accept headers of the clients frontends use.
const (
	acceptApollo = "application/graphql-response+json,application/json;q=0.9"
	acceptURQL   = "application/graphql-response+json, application/graphql+json, application/json, text/event-stream, multipart/mixed"
)

// postAccept posts a GraphQL request with the given Accept header.
func (a *testAPI) postAccept(accept, token string, body map[string]any) *gqlResponse {
	a.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, a.srv.URL+"/query", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return a.decode(a.do(req))
}

// TestNegotiationRequestErrors: a request error is 200 under
// application/json and 400 under application/graphql-response+json, in the
// type negotiated from Accept (q-values, not listed order), without a data
// key; a request without a query is 400 under both; a body over the limit
// is 413 in the negotiated type with its code.
func TestNegotiationRequestErrors(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	for _, accept := range []string{"", "*/*", "application/json", acceptApollo, acceptURQL,
		"application/json, application/graphql-response+json", "application/graphql-response+json;q=0.1, application/json"} {
		r := a.postAccept(accept, "", map[string]any{"query": "{ nope }"})
		expectRequestError(t, "validation, Accept "+accept, r, "GRAPHQL_VALIDATION_FAILED")
		r = a.postAccept(accept, "", map[string]any{"query": "{"})
		expectRequestError(t, "parse, Accept "+accept, r, "GRAPHQL_PARSE_FAILED")

		r = a.postAccept(accept, "", map[string]any{"variables": map[string]any{}})
		if ct := r.Header.Get("Content-Type"); r.Status != http.StatusBadRequest || ct != web.Negotiate(accept).JSON || r.Data != nil {
			t.Errorf("no query, Accept %q: HTTP %d %s: %s", accept, r.Status, ct, r.Raw)
		}

		big := map[string]any{"query": "{ __typename }", "variables": map[string]any{"x": strings.Repeat("x", web.MaxRequestBytes)}}
		r = a.postAccept(accept, "", big)
		if ct := r.Header.Get("Content-Type"); r.Status != http.StatusRequestEntityTooLarge || ct != web.Negotiate(accept).JSON || r.code(t) != graph.CodeBadUserInput {
			t.Errorf("too large, Accept %q: HTTP %d %s: %.300s", accept, r.Status, ct, r.Raw)
		}
	}
}

// TestNegotiationQueryNotStreamed: urql's default Accept lists
// text/event-stream after the JSON types, so its queries and mutations get
// JSON and only its subscriptions a stream; a client that prefers the
// stream gets one for a query too.
func TestNegotiationQueryNotStreamed(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	_, token := a.user("Ann")
	for i := range 3 { // the third query used to crash urql
		r := a.postAccept(acceptURQL, token, map[string]any{"query": "{ me { displayName } }"})
		if ct := r.Header.Get("Content-Type"); !r.ok() || ct != web.MediaGraphQLResponse {
			t.Fatalf("query %d with urql's Accept: HTTP %d %s: %s", i, r.Status, ct, r.Raw)
		}
	}
	for _, tc := range []struct {
		accept string
		stream bool
	}{
		{acceptURQL, true},
		{"text/event-stream", true},
		{"application/json, text/event-stream;q=0.5", true},
		{"application/json, text/event-stream;q=0", false},
	} {
		got := a.streams(tc.accept, "", url.Values{"query": {poolStatusSubscription}, "variables": {`{"ms":100}`}}, http.MethodPost)
		if got != tc.stream {
			t.Errorf("subscription with Accept %q: streamed %v, want %v", tc.accept, got, tc.stream)
		}
	}
	resp, raw := a.postStream("text/event-stream, application/json;q=0.9", token, map[string]any{"query": "{ me { displayName } }"}, http.MethodPost)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, web.MediaEventStream) || !strings.Contains(string(raw), "event: complete") {
		t.Errorf("query preferring a stream: %s: %s", ct, raw)
	}
}

// TestNegotiationEventSource: a browser's EventSource subscribes with a
// GET (Accept: text/event-stream, no headers of its own): poolStatus needs
// no token, messageAdded takes it as the access_token parameter; a bad
// token is refused like one in a header, and a query over GET is still
// plain JSON.
func TestNegotiationEventSource(t *testing.T) {
	t.Parallel()
	a := newRealtimeAPI(t)
	ann, token := a.user("Ann")
	conv := a.conversation("", []string{ann})

	if !a.streams(web.MediaEventStream, "", url.Values{"query": {poolStatusSubscription}}, http.MethodGet) {
		t.Fatal("poolStatus over GET: not streamed")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q := url.Values{"query": {messageAddedSubscription}, "variables": {`{"c":"` + conv + `"}`}, web.AccessTokenParam: {token}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.srv.URL+"/query?"+q.Encode(), nil)
	req.Header.Set("Accept", web.MediaEventStream)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, web.MediaEventStream) {
		t.Fatalf("messageAdded over GET: HTTP %d %s", resp.StatusCode, ct)
	}
	a.waitSubscribers(1)
	sent := a.sendMessage(token, conv, "hello EventSource")
	if got := (&sseStream{t: t, sc: bufio.NewScanner(resp.Body)}).nextMessage(); got.ID != sent {
		t.Errorf("messageAdded over GET: got %+v, want message %s", got, sent)
	}

	q.Set(web.AccessTokenParam, "not-a-token")
	_, raw := a.postStream(web.MediaEventStream, "", nil, http.MethodGet, q)
	if !strings.Contains(string(raw), graph.CodeUnauthenticated) {
		t.Errorf("messageAdded over GET with a bad token: %s", raw)
	}

	resp, raw = a.get("", "/query?query="+url.QueryEscape("{ poolStatus { status } }"))
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != web.MediaJSON {
		t.Errorf("query over GET: HTTP %d %s: %s", resp.StatusCode, ct, raw)
	}
}

// streams reports whether a subscription request (params as a POST body
// or GET's query string) gets an event stream; it reads the first event
// only.
func (a *testAPI) streams(accept, token string, params url.Values, method string) bool {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := a.request(ctx, accept, token, params, method)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), web.MediaEventStream) {
		return false
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			return true
		}
	}
	a.t.Errorf("stream ended without an event: %v", sc.Err())
	return true
}

// postStream sends a request that completes (a query, or a subscription
// refused at once) and returns its whole response.
func (a *testAPI) postStream(accept, token string, body map[string]any, method string, query ...url.Values) (*http.Response, []byte) {
	a.t.Helper()
	params := url.Values{}
	for k, v := range body {
		params.Set(k, v.(string))
	}
	if len(query) > 0 {
		params = query[0]
	}
	return a.do(a.request(context.Background(), accept, token, params, method))
}

// request builds a GraphQL request: params as the JSON body of a POST
// (variables and extensions as JSON) or as a GET's query string.
func (a *testAPI) request(ctx context.Context, accept, token string, params url.Values, method string) *http.Request {
	a.t.Helper()
	var req *http.Request
	if method == http.MethodGet {
		req, _ = http.NewRequestWithContext(ctx, method, a.srv.URL+"/query?"+params.Encode(), nil)
	} else {
		body := map[string]any{}
		for k := range params {
			if k == "variables" || k == "extensions" {
				body[k] = json.RawMessage(params.Get(k))
			} else {
				body[k] = params.Get(k)
			}
		}
		b, _ := json.Marshal(body)
		req, _ = http.NewRequestWithContext(ctx, method, a.srv.URL+"/query", bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", accept)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req
}
