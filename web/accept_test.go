package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestNegotiate: the JSON type and the two stream rules for the Accept
// headers clients send, and for q-values and wildcards.
func TestNegotiate(t *testing.T) {
	const urql = "application/graphql-response+json, application/graphql+json, application/json, text/event-stream, multipart/mixed"
	for _, tc := range []struct {
		accept           string
		json             string
		acceptable, pref bool
	}{
		{"", MediaJSON, false, false},
		{"*/*", MediaJSON, false, false},
		{"application/*", MediaJSON, false, false},
		{"application/json", MediaJSON, false, false},
		{"application/graphql-response+json", MediaGraphQLResponse, false, false},
		// Apollo Client 4's default.
		{"application/graphql-response+json,application/json;q=0.9", MediaGraphQLResponse, false, false},
		{urql, MediaGraphQLResponse, true, false},
		// Listed order does not matter, q does.
		{"application/json, application/graphql-response+json", MediaGraphQLResponse, false, false},
		{"application/graphql-response+json;q=0.5, application/json", MediaJSON, false, false},
		// A type named exactly beats one reached through a wildcard.
		{"application/graphql-response+json, */*", MediaGraphQLResponse, false, false},
		{"application/json, */*", MediaJSON, false, false},
		{"*/*;q=0.8, application/json;q=0.5", MediaGraphQLResponse, false, false},
		// Refused JSON types.
		{"application/graphql-response+json;q=0, */*", MediaJSON, false, false},
		{"application/json;q=0, application/graphql-response+json;q=0", MediaJSON, false, false},
		// Streams: named exactly, q > 0; preferred only when strictly above JSON.
		{"text/event-stream", MediaJSON, true, true},
		{"text/event-stream;q=0", MediaJSON, false, false},
		{"text/*", MediaJSON, false, false},
		{"text/event-stream, application/json;q=0.9", MediaJSON, true, true},
		{"text/event-stream;q=0.5, application/json", MediaJSON, true, false},
		{"TEXT/Event-Stream ; Q=1, application/json ; q=0.2", MediaJSON, true, true},
		// Malformed elements are skipped; a bad q is 0.
		{"garbage, /json, */json, text/event-stream;q=x", MediaJSON, false, false},
		{"application/graphql-response+json;charset=utf-8;q=1;ext=1", MediaGraphQLResponse, false, false},
	} {
		n := Negotiate(tc.accept)
		if n.JSON != tc.json || n.StreamAcceptable() != tc.acceptable || n.StreamPreferred() != tc.pref {
			t.Errorf("Negotiate(%q) = %s, acceptable %v, preferred %v; want %s, %v, %v",
				tc.accept, n.JSON, n.StreamAcceptable(), n.StreamPreferred(), tc.json, tc.acceptable, tc.pref)
		}
	}
}

// TestNegotiateRewritesAccept: the transports behind see only the chosen
// type; a subscription is streamed whenever a stream is acceptable and
// its body is still there for the transport; a GET subscription becomes
// a POST with the access_token parameter as its Authorization, off the
// URL.
func TestNegotiateRewritesAccept(t *testing.T) {
	isSub := func(query, _ string) bool { return strings.HasPrefix(query, "subscription") }
	const urql = "application/graphql-response+json, application/json, text/event-stream"
	post := func(accept, body string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/query", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Accept", accept)
		return r
	}
	for _, tc := range []struct {
		name   string
		r      *http.Request
		accept string
	}{
		{"urql query", post(urql, `{"query":"{ a }"}`), MediaGraphQLResponse},
		{"urql subscription", post(urql, `{"query":"subscription { a }"}`), MediaEventStream},
		{"stream refused", post("application/json, text/event-stream;q=0", `{"query":"subscription { a }"}`), MediaJSON},
		{"stream preferred", post("text/event-stream", `{"query":"{ a }"}`), MediaEventStream},
	} {
		r, choice := negotiate(tc.r, Negotiate(tc.r.Header.Get("Accept")), isSub)
		if got := r.Header.Get("Accept"); got != tc.accept || choice.stream != (tc.accept == MediaEventStream) || isSSE(r) != choice.stream {
			t.Errorf("%s: Accept %q, stream %v; want %q", tc.name, got, choice.stream, tc.accept)
		}
		if body, _ := io.ReadAll(r.Body); !strings.Contains(string(body), `"query"`) {
			t.Errorf("%s: body %q after negotiation", tc.name, body)
		}
	}

	get := httptest.NewRequest(http.MethodGet, "/query?query=subscription+%7B+a+%7D&variables=%7B%22x%22%3A1%7D&access_token=secret", nil)
	get.Header.Set("Accept", MediaEventStream)
	r, choice := negotiate(get, Negotiate(MediaEventStream), isSub)
	body, _ := io.ReadAll(r.Body)
	if !choice.stream || r.Method != http.MethodPost || r.Header.Get("Content-Type") != MediaJSON ||
		string(body) != `{"query":"subscription { a }","variables":{"x":1}}` {
		t.Errorf("GET subscription: stream %v, %s %s %q", choice.stream, r.Method, r.Header.Get("Content-Type"), body)
	}
	if r.Header.Get("Authorization") != "Bearer secret" || strings.Contains(r.URL.String(), "secret") || strings.Contains(r.RequestURI, "secret") {
		t.Errorf("GET subscription: Authorization %q, URL %s, RequestURI %s", r.Header.Get("Authorization"), r.URL, r.RequestURI)
	}

	query := httptest.NewRequest(http.MethodGet, "/query?query=%7B+a+%7D", nil)
	query.Header.Set("Accept", MediaEventStream+", application/json")
	if r, choice := negotiate(query, Negotiate(query.Header.Get("Accept")), isSub); choice.stream || r.Method != http.MethodGet {
		t.Errorf("GET query: stream %v, %s", choice.stream, r.Method)
	}
}
