package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"chatql/graph"
	"chatql/web"
)

// The protocol tests: bad arguments, oversized bodies, expensive queries,
// persisted queries, introspection, GET and the playground. Every GraphQL
// response they see must give each error a code and leak nothing internal.

// leakMarkers are fragments of parser and driver errors that must never
// reach a client.
var leakMarkers = []string{"strconv", "uuid:", "SQLSTATE", "pgx"}

// checkProtocol fails unless r is not a 500, every error in it carries an
// extensions.code, and its body shows no internal detail.
func checkProtocol(t *testing.T, r *gqlResponse) {
	t.Helper()
	if r.Status >= 500 {
		t.Errorf("HTTP %d: %.300s", r.Status, r.Raw)
	}
	for i, e := range r.Errors {
		if e.Extensions.Code == "" {
			t.Errorf("error %d has no extensions.code: %.300s", i, r.Raw)
		}
	}
	for _, m := range leakMarkers {
		if bytes.Contains(r.Raw, []byte(m)) {
			t.Errorf("response leaks %q: %.300s", m, r.Raw)
		}
	}
}

// expectCode checks that the first error of r has code and, if field is
// not "", names field; all errors must be of that code.
func expectCode(t *testing.T, name string, r *gqlResponse, code, field string) {
	t.Helper()
	checkProtocol(t, r)
	if len(r.Errors) == 0 {
		t.Errorf("%s: no error, want %s: %.300s", name, code, r.Raw)
		return
	}
	for _, e := range r.Errors {
		if e.Extensions.Code != code {
			t.Errorf("%s: codes %v, want %s: %.300s", name, r.codes(), code, r.Raw)
			return
		}
	}
	if field != "" && r.Errors[0].Extensions.Field != field {
		t.Errorf("%s: extensions.field %q, want %q", name, r.Errors[0].Extensions.Field, field)
	}
}

// requestErrorStatus is the HTTP status of a request error (an operation
// refused before it runs: parse, validation, complexity, size) for a
// request that sent accept, per GraphQL over HTTP: 400 when the response
// is application/graphql-response+json, 200 when it is application/json
// (no Accept, as the harness sends, is application/json). Every test
// asserts it through expectRequestError, so that the rule lives here once.
func requestErrorStatus(accept string) int {
	if web.Negotiate(accept).JSON == web.MediaGraphQLResponse {
		return http.StatusBadRequest
	}
	return http.StatusOK
}

// expectRequestError checks that r is a request error: HTTP
// requestErrorStatus for the Accept it sent, in the type negotiated, no
// data key, and only errors of code.
func expectRequestError(t *testing.T, name string, r *gqlResponse, code string) {
	t.Helper()
	expectCode(t, name, r, code, "")
	if want := requestErrorStatus(r.Accept); r.Status != want {
		t.Errorf("%s: HTTP %d, want %d (Accept %q): %.300s", name, r.Status, want, r.Accept, r.Raw)
	}
	if ct, want := r.Header.Get("Content-Type"), web.Negotiate(r.Accept).JSON; ct != want {
		t.Errorf("%s: Content-Type %q, want %q (Accept %q)", name, ct, want, r.Accept)
	}
	if r.Data != nil {
		t.Errorf("%s: refused operation has a data key: %.300s", name, r.Raw)
	}
}

// TestInputPageSizeAndCursor: page sizes outside 1..100 and cursors that
// were not handed out are BAD_USER_INPUT naming the argument, on both
// connections and on both the prefetch and the resolver path.
func TestInputPageSizeAndCursor(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	ann, token := a.user("Ann")
	conv := a.conversation("", []string{ann}, "hello")
	garbageCursor := base64.RawURLEncoding.EncodeToString([]byte("x|y"))
	noIDCursor := base64.RawURLEncoding.EncodeToString([]byte(time.Now().UTC().Format(time.RFC3339Nano) + "|not-an-id"))
	vars := map[string]any{"c": conv}

	// A control: the same shapes with good arguments work.
	var ok struct {
		Conversations struct{ Nodes []struct{ ID string } }
		Conversation  struct {
			Messages struct{ Nodes []struct{ Body string } }
		}
	}
	r := a.post(token, `query($c: ID!) { conversations(first: 1) { nodes { id } }
		conversation(id: $c) { messages(first: 1) { nodes { body } } } }`, vars)
	checkProtocol(t, r)
	r.into(t, &ok)
	if len(ok.Conversations.Nodes) != 1 || len(ok.Conversation.Messages.Nodes) != 1 {
		t.Fatalf("control query: %s", r.Raw)
	}

	for _, tc := range []struct {
		name, query string
		vars        map[string]any
		field       string
	}{
		{"conversations first 0", `{ conversations(first: 0) { nodes { id } } }`, nil, "first"},
		{"conversations first 101", `{ conversations(first: 101) { nodes { id } } }`, nil, "first"},
		{"conversations first -1", `{ conversations(first: -1) { nodes { id } } }`, nil, "first"},
		{"conversations first $n=0", `query($n: Int) { conversations(first: $n) { nodes { id } } }`, map[string]any{"n": 0}, "first"},
		{"messages first 0", `query($c: ID!) { conversation(id: $c) { messages(first: 0) { nodes { id } } } }`, vars, "first"},
		{"messages first 101", `query($c: ID!) { conversation(id: $c) { messages(first: 101) { nodes { id } } } }`, vars, "first"},
		{"inbox messages first 0", `{ conversations { nodes { messages(first: 0) { nodes { id } } } } }`, nil, "first"},
		{"inbox messages first $n=0", `query($n: Int) { conversations { edges { node { messages(first: $n) { nodes { id } } } } } }`, map[string]any{"n": 0}, "first"},
		{"conversations after garbage", `{ conversations(after: "garbage") { nodes { id } } }`, nil, "after"},
		{"conversations after x|y", fmt.Sprintf(`{ conversations(after: %q) { nodes { id } } }`, garbageCursor), nil, "after"},
		{"conversations after time|not-an-id", fmt.Sprintf(`{ conversations(after: %q) { nodes { id } } }`, noIDCursor), nil, "after"},
		{"conversations after !!!", `{ conversations(after: "!!!") { nodes { id } } }`, nil, "after"},
		{"messages after garbage", `query($c: ID!) { conversation(id: $c) { messages(after: "garbage") { nodes { id } } } }`, vars, "after"},
		{"messages after x|y", fmt.Sprintf(`query($c: ID!) { conversation(id: $c) { messages(after: %q) { nodes { id } } } }`, garbageCursor), vars, "after"},
		{"inbox messages after x|y", fmt.Sprintf(`{ conversations { nodes { messages(after: %q) { nodes { id } } } } }`, garbageCursor), nil, "after"},
	} {
		r := a.post(token, tc.query, tc.vars)
		if r.Status != http.StatusOK {
			t.Errorf("%s: HTTP %d, want 200", tc.name, r.Status)
		}
		expectCode(t, tc.name, r, graph.CodeBadUserInput, tc.field)
	}
}

// TestInputMalformedIDs: every ID argument that is not a canonical uuid is
// BAD_USER_INPUT naming the argument, and nothing is stored.
func TestInputMalformedIDs(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	ann, token := a.user("Ann")
	conv := a.conversation("", []string{ann})
	valid := uuid.NewString()
	vars := map[string]any{"c": conv, "u": ann}
	before := a.rows()

	for _, tc := range []struct {
		name, query string
		field       string
	}{
		{"conversation word", `{ conversation(id: "nope") { id } }`, "id"},
		{"conversation int", `{ conversation(id: 123) { id } }`, "id"},
		{"conversation sql", `{ conversation(id: "'; DROP TABLE users; --") { id } }`, "id"},
		{"user int string", `{ user(id: "123") { id } }`, "id"},
		{"user braces", fmt.Sprintf(`{ user(id: "{%s}") { id } }`, valid), "id"},
		{"user urn", fmt.Sprintf(`{ user(id: "urn:uuid:%s") { id } }`, valid), "id"},
		{"user no hyphens", fmt.Sprintf(`{ user(id: %q) { id } }`, strings.ReplaceAll(valid, "-", "")), "id"},
		{"user not hex", `{ user(id: "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz") { id } }`, "id"},
		{"sendMessage", `mutation { sendMessage(input: {conversationId: "x", body: "hi"}) { id } }`, "conversationId"},
		{"addParticipant conversation", `mutation($u: ID!) { addParticipant(conversationId: "x", userId: $u) { id } }`, "conversationId"},
		{"addParticipant user", `mutation($c: ID!) { addParticipant(conversationId: $c, userId: "x") { id } }`, "userId"},
		{"markConversationRead", `mutation { markConversationRead(conversationId: "x") { id } }`, "conversationId"},
		{"createConversation", `mutation { createConversation(input: {participantIds: ["x"]}) { id } }`, "participantIds"},
	} {
		r := a.post(token, tc.query, vars)
		if r.Status != http.StatusOK {
			t.Errorf("%s: HTTP %d, want 200", tc.name, r.Status)
		}
		expectCode(t, tc.name, r, graph.CodeBadUserInput, tc.field)
	}
	a.expectRows("rejected writes", before)
}

// TestInputNULCharacters: a string argument holding U+0000 (which
// PostgreSQL text cannot store) is bad input, not an internal error.
func TestInputNULCharacters(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	ann, token := a.user("Ann")
	conv := a.conversation("", []string{ann})
	for _, tc := range []struct {
		name, query string
		vars        map[string]any
		codes       []string
	}{
		{"sendMessage body", `mutation($c: ID!, $b: String!) { sendMessage(input: {conversationId: $c, body: $b}) { id } }`,
			map[string]any{"c": conv, "b": "a\x00b"}, []string{graph.CodeBadUserInput}},
		{"createConversation title", `mutation($t: String) { createConversation(input: {title: $t, participantIds: []}) { id } }`,
			map[string]any{"t": "a\x00b"}, []string{graph.CodeBadUserInput}},
		{"signUp displayName", `mutation($n: String!) { signUp(input: {email: "nul@example.com", password: "long enough", displayName: $n}) { token } }`,
			map[string]any{"n": "a\x00b"}, []string{graph.CodeBadUserInput}},
		{"signUp email", `mutation($e: String!) { signUp(input: {email: $e, password: "long enough", displayName: "Nul"}) { token } }`,
			map[string]any{"e": "a\x00b@example.com"}, []string{graph.CodeBadUserInput}},
		{"signIn email", `mutation($e: String!) { signIn(input: {email: $e, password: "long enough"}) { token } }`,
			map[string]any{"e": "a\x00b@example.com"}, []string{graph.CodeBadUserInput, graph.CodeUnauthenticated}},
	} {
		r := a.post(token, tc.query, tc.vars)
		checkProtocol(t, r)
		if got := r.codes(); len(got) != 1 || !slices.Contains(tc.codes, got[0]) {
			t.Errorf("%s: codes %v, want one of %v", tc.name, got, tc.codes)
		}
	}
}

// bodyOfSize returns a valid GraphQL request body of exactly n bytes, in
// three parts (padding in the middle), asking for __typename.
func bodyOfSize(n int) (prefix, pad, suffix string) {
	prefix, suffix = `{"query":"{ __typename }","variables":{"pad":"`, `"}}`
	return prefix, strings.Repeat("x", n-len(prefix)-len(suffix)), suffix
}

// TestBodyTooLarge: a body over 1 MiB is 413 whether its length is
// announced or it arrives chunked; exactly 1 MiB is accepted. Nothing
// borrows a connection.
func TestBodyTooLarge(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	for _, tc := range []struct {
		name    string
		size    int
		chunked bool
		status  int
	}{
		{"1 MiB with Content-Length", web.MaxRequestBytes, false, http.StatusOK},
		{"1 MiB chunked", web.MaxRequestBytes, true, http.StatusOK},
		{"1 MiB + 1 with Content-Length", web.MaxRequestBytes + 1, false, http.StatusRequestEntityTooLarge},
		{"1 MiB + 1 chunked", web.MaxRequestBytes + 1, true, http.StatusRequestEntityTooLarge},
		{"2 MiB chunked", 2 * web.MaxRequestBytes, true, http.StatusRequestEntityTooLarge},
	} {
		prefix, pad, suffix := bodyOfSize(tc.size)
		var body io.Reader = strings.NewReader(prefix + pad + suffix)
		if tc.chunked {
			// A reader of unknown length: the client sends it chunked.
			body = io.MultiReader(strings.NewReader(prefix), strings.NewReader(pad), strings.NewReader(suffix))
		}
		req, _ := http.NewRequest(http.MethodPost, a.srv.URL+"/query", body)
		req.Header.Set("Content-Type", "application/json")
		if tc.chunked {
			req.ContentLength = -1
		} else if req.ContentLength != int64(tc.size) {
			t.Fatalf("%s: Content-Length %d, want %d", tc.name, req.ContentLength, tc.size)
		}
		resp, raw := a.do(req)
		if resp.StatusCode != tc.status {
			t.Errorf("%s: HTTP %d, want %d: %.200s", tc.name, resp.StatusCode, tc.status, raw)
		}
		// A 413 decided before the body is read is plain text; any JSON
		// answer must follow the error rules.
		if strings.Contains(resp.Header.Get("Content-Type"), "json") {
			r := a.decode(resp, raw)
			checkProtocol(t, r)
			if tc.status == http.StatusOK && (len(r.Errors) > 0 || !bytes.Contains(r.Data, []byte(`"Query"`))) {
				t.Errorf("%s: %.200s", tc.name, raw)
			}
		}
	}
	if st := a.pool.Stats(); st.AcquireCount != 0 {
		t.Errorf("body-limit requests borrowed connections: %+v", st)
	}
}

// expensiveQuery nests pages three deep: 100 × 100 × 100 messages.
const expensiveQuery = `{ conversations(first: 100) { nodes { messages(first: 100) { nodes {
	conversation { messages(first: 100) { nodes { id } } } } } } } }`

// TestComplexityLimit: an operation over the complexity limit is refused
// with COMPLEXITY_LIMIT_EXCEEDED and HTTP 422 before it borrows a
// connection; the inbox query is well within the limit.
func TestComplexityLimit(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	ann, token := a.user("Ann")
	a.conversation("", []string{ann}, "hello")
	a.waitReleased()

	before := a.pool.Stats().AcquireCount
	for _, tc := range []struct {
		name, query string
		vars        map[string]any
	}{
		{"nested literal pages", expensiveQuery, nil},
		{"nested pages from variables", `query($n: Int) { conversations(first: $n) { nodes { messages(first: $n) { nodes {
			conversation { messages(first: $n) { nodes { id } } } } } } } }`, map[string]any{"n": 100}},
	} {
		expectRequestError(t, tc.name, a.post(token, tc.query, tc.vars), graph.CodeComplexityLimit)
	}
	if got := a.pool.Stats().AcquireCount; got != before {
		t.Errorf("refused operations borrowed %d connections", got-before)
	}

	r := a.post(token, graph.InboxQuery, nil)
	checkProtocol(t, r)
	var inbox struct{ Conversations struct{ Edges []any } }
	r.into(t, &inbox)
	if len(inbox.Conversations.Edges) != 1 {
		t.Errorf("inbox: %s", r.Raw)
	}
}

// idAliases returns n aliased id selections: each costs 1.
func idAliases(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "i%d: id ", i)
	}
	return b.String()
}

// overflowingQuery builds a query whose true complexity is about 1.8e19
// but whose cost, computed in int64 as 1 + first × child at each page,
// wraps around to 85.
//
// The costs, with messages(first: 100) { nodes { T } } costing
// 1 + 100 × (1 + cost(T)) and conversation { S } costing 1 + cost(S):
// the root is 1 + 100 × child, and child = (2^64 + 84) / 100 makes it
// 2^64 + 85, which wraps to 85. child is built as 1 + cost(nodes), the
// nodes as id aliases plus one nested page, whose own cost is written
// digit by digit in base 100 (aliases set each digit, nesting shifts it).
func overflowingQuery() string {
	child := uint64(math.MaxUint64-15)/100 + 1 // (2^64 + 84) / 100
	nodes := child - 1                         // = aliases + 1 + 100 × u
	top := int((nodes - 1) % 100)
	u := (nodes - 1 - uint64(top)) / 100
	// u = d + 100 × u' at each level, where a level with r aliases and a
	// nested page has d = r + 3; the innermost level of r aliases is r + 1.
	var digits []int
	for u > 102 {
		d := int((u-3)%100) + 3
		digits = append(digits, d)
		u = (u - uint64(d)) / 100
	}
	inner := idAliases(int(u) - 1)
	for i := len(digits) - 1; i >= 0; i-- {
		inner = idAliases(digits[i]-3) + "conversation { messages(first: 100) { nodes { " + inner + "} } } "
	}
	return "{ conversations(first: 100) { nodes { " + idAliases(top) + "messages(first: 100) { nodes { " + inner + "} } } } }"
}

// TestComplexityOverflow: a query nested deep enough that its cost
// overflows int64 is still refused.
func TestComplexityOverflow(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	_, token := a.user("Ann")
	expectRequestError(t, "overflowing query", a.post(token, overflowingQuery(), nil), graph.CodeComplexityLimit)
}

// apqBody is an automatic-persisted-query request: query "" sends the
// hash alone.
func apqBody(query, hash string) map[string]any {
	body := map[string]any{"extensions": map[string]any{"persistedQuery": map[string]any{"version": 1, "sha256Hash": hash}}}
	if query != "" {
		body["query"] = query
	}
	return body
}

// TestAPQ: a hash the server has not seen is PERSISTED_QUERY_NOT_FOUND;
// sent with its query it runs and is remembered, so the hash alone then
// runs too.
func TestAPQ(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	ann, token := a.user("Ann")
	query := "{ me { id } }"
	sum := sha256.Sum256([]byte(query))
	hash := hex.EncodeToString(sum[:])

	r := a.postBody(bearer(token), apqBody("", hash))
	checkProtocol(t, r)
	if code := r.code(t); code != "PERSISTED_QUERY_NOT_FOUND" {
		t.Fatalf("unknown hash: code %s, want PERSISTED_QUERY_NOT_FOUND", code)
	}
	if r.Status != http.StatusOK {
		t.Errorf("unknown hash: HTTP %d, want 200 (the README's promise)", r.Status)
	}

	for _, step := range []string{"hash and query", "hash alone"} {
		q := query
		if step == "hash alone" {
			q = ""
		}
		r := a.postBody(bearer(token), apqBody(q, hash))
		checkProtocol(t, r)
		var data struct{ Me struct{ ID string } }
		r.into(t, &data)
		if data.Me.ID != ann {
			t.Errorf("%s: me %q, want %q", step, data.Me.ID, ann)
		}
	}

	// A hash that does not match its query is refused, not run.
	r = a.postBody(bearer(token), apqBody("{ me { displayName } }", hash))
	checkProtocol(t, r)
	if len(r.Errors) == 0 || (len(r.Data) != 0 && string(r.Data) != "null") {
		t.Errorf("mismatched hash: %s", r.Raw)
	}
}

// TestIntrospection: introspection works by default and is refused when
// turned off; __typename is not introspection and always works.
func TestIntrospection(t *testing.T) {
	t.Parallel()
	on := newAPI(t)
	r := on.post("", "{ __schema { types { name } } }", nil)
	checkProtocol(t, r)
	var schema struct {
		Schema struct{ Types []struct{ Name string } } `json:"__schema"`
	}
	r.into(t, &schema)
	found := false
	for _, ty := range schema.Schema.Types {
		found = found || ty.Name == "Conversation"
	}
	if !found {
		t.Errorf("introspection does not list Conversation: %.300s", r.Raw)
	}

	off := on.replica(t, func(o *apiOptions) { o.introspection = false })
	for _, q := range []string{"{ __schema { types { name } } }", `{ __type(name: "User") { name } }`} {
		r := off.post("", q, nil)
		checkProtocol(t, r)
		if len(r.Errors) == 0 {
			t.Errorf("%s: introspection off, but no error: %s", q, r.Raw)
		}
		if bytes.Contains(r.Data, []byte(`"name"`)) {
			t.Errorf("%s: introspection off, but data: %s", q, r.Data)
		}
	}
	r = off.post("", "{ __typename }", nil)
	checkProtocol(t, r)
	var typename struct {
		Typename string `json:"__typename"`
	}
	r.into(t, &typename)
	if typename.Typename != "Query" {
		t.Errorf("__typename %q", typename.Typename)
	}
}

// TestGETQuery: GET /query runs queries (with variables) and refuses
// mutations with 406 without running them.
func TestGETQuery(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	ann, token := a.user("Ann")
	conv := a.conversation("", []string{ann}, "hello")

	resp, raw := a.get(token, "/query?query="+url.QueryEscape("{ me { id } }"))
	r := a.decode(resp, raw)
	checkProtocol(t, r)
	var me struct{ Me struct{ ID string } }
	r.into(t, &me)
	if me.Me.ID != ann {
		t.Errorf("GET me: %s", raw)
	}

	v, _ := json.Marshal(map[string]any{"id": ann})
	resp, raw = a.get(token, "/query?query="+url.QueryEscape("query($id: ID!) { user(id: $id) { displayName } }")+"&variables="+url.QueryEscape(string(v)))
	r = a.decode(resp, raw)
	checkProtocol(t, r)
	var user struct{ User struct{ DisplayName string } }
	r.into(t, &user)
	if user.User.DisplayName != "Ann" {
		t.Errorf("GET user with variables: %s", raw)
	}

	a.waitReleased()
	before := a.pool.Stats().AcquireCount
	mutation := fmt.Sprintf(`mutation { markConversationRead(conversationId: %q) { id } }`, conv)
	resp, raw = a.get(token, "/query?query="+url.QueryEscape(mutation))
	if resp.StatusCode != http.StatusNotAcceptable {
		t.Errorf("GET mutation: HTTP %d, want 406: %s", resp.StatusCode, raw)
	}
	if got := a.pool.Stats().AcquireCount; got != before {
		t.Errorf("GET mutation borrowed %d connections", got-before)
	}
	// The fixture leaves no read marks; the refused mutation must not set one.
	if got := a.count("SELECT count(*)::int FROM conversation_participants WHERE last_read_at IS NOT NULL"); got != 0 {
		t.Errorf("GET mutation ran: %d read marks", got)
	}
}

// TestInputTransportErrorsCoded: errors gqlgen's transports write
// themselves carry an extensions.code like every other error.
func TestInputTransportErrorsCoded(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	for _, tc := range []struct {
		name, method, path, contentType, body string
	}{
		{"GET mutation", http.MethodGet, "/query?query=" + url.QueryEscape(`mutation { markConversationRead(conversationId: "x") { id } }`), "", ""},
		{"GET bad variables", http.MethodGet, "/query?query=" + url.QueryEscape("{ __typename }") + "&variables=nope", "", ""},
		{"POST text/plain", http.MethodPost, "/query", "text/plain", `{"query":"{ __typename }"}`},
	} {
		req, _ := http.NewRequest(tc.method, a.srv.URL+tc.path, strings.NewReader(tc.body))
		if tc.contentType != "" {
			req.Header.Set("Content-Type", tc.contentType)
		}
		resp, raw := a.do(req)
		r := a.decode(resp, raw)
		if len(r.Errors) == 0 {
			t.Errorf("%s: no error: %s", tc.name, raw)
		}
		for _, e := range r.Errors {
			if e.Extensions.Code == "" {
				t.Errorf("%s: HTTP %d, error without extensions.code: %s", tc.name, resp.StatusCode, raw)
			}
		}
	}
}

// TestInputRequestErrorsNotInternal: a client's mistakes at the request
// level are not reported as INTERNAL (which the README defines as a bug
// of ours, and which is logged as an error).
func TestInputRequestErrorsNotInternal(t *testing.T) {
	t.Parallel()
	a := newAPI(t, func(o *apiOptions) { o.introspection = false })
	sum := sha256.Sum256([]byte("{ __typename }"))

	var rs []*gqlResponse
	rs = append(rs, a.post("", "{ __schema { types { name } } }", nil))
	rs = append(rs, a.postBody("", apqBody("{ poolStatus { status } }", hex.EncodeToString(sum[:]))))
	req, _ := http.NewRequest(http.MethodPost, a.srv.URL+"/query", strings.NewReader(`{"query":`))
	req.Header.Set("Content-Type", "application/json")
	resp, raw := a.do(req)
	rs = append(rs, a.decode(resp, raw))
	prefix, pad, suffix := bodyOfSize(web.MaxRequestBytes + 1)
	req, _ = http.NewRequest(http.MethodPost, a.srv.URL+"/query", io.MultiReader(strings.NewReader(prefix), strings.NewReader(pad), strings.NewReader(suffix)))
	req.Header.Set("Content-Type", "application/json")
	resp, raw = a.do(req)
	rs = append(rs, a.decode(resp, raw))

	for i, r := range rs {
		checkProtocol(t, r)
		if len(r.Errors) == 0 {
			t.Errorf("request %d: no error: %s", i, r.Raw)
		}
		for _, c := range r.codes() {
			if c == graph.CodeInternal {
				t.Errorf("request %d: HTTP %d, a client mistake reported as INTERNAL: %s", i, r.Status, r.Raw)
			}
		}
	}
}

// TestInputMalformedJSONBody: a body that is not JSON is a 400 with a
// coded error, not a 500.
func TestInputMalformedJSONBody(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	for _, body := range []string{`{"query":`, `not json`, `[]`} {
		req, _ := http.NewRequest(http.MethodPost, a.srv.URL+"/query", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, raw := a.do(req)
		r := a.decode(resp, raw)
		checkProtocol(t, r)
		if resp.StatusCode != http.StatusBadRequest || len(r.Errors) == 0 {
			t.Errorf("%q: HTTP %d, want 400 with an error: %s", body, resp.StatusCode, raw)
		}
	}
	if st := a.pool.Stats(); st.AcquireCount != 0 {
		t.Errorf("undecodable requests borrowed connections: %+v", st)
	}
}

// TestPlayground: GET / redirects to the playground with the inbox query
// filled in, and the playground is GraphiQL.
func TestPlayground(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(a.srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, "/?query=") {
		t.Fatalf("GET /: HTTP %d Location %q, want 302 to /?query=...", resp.StatusCode, loc)
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	if got := u.Query().Get("query"); got != graph.InboxQuery {
		t.Errorf("redirect query %q, want the inbox query", got)
	}

	resp, raw := a.get("", loc)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("playground: HTTP %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if !bytes.Contains(bytes.ToLower(raw), []byte("graphiql")) {
		t.Errorf("playground page does not mention GraphiQL: %.300s", raw)
	}
	if st := a.pool.Stats(); st.AcquireCount != 0 {
		t.Errorf("the playground borrowed connections: %+v", st)
	}
}

// TestSubscriptionOverPlainPOST: a subscription POSTed without asking for
// server-sent events is refused at once with BAD_USER_INPUT naming the
// transports, instead of hanging until the conversation's next message;
// the same request with Accept: text/event-stream streams.
func TestSubscriptionOverPlainPOST(t *testing.T) {
	t.Parallel()
	a := newRealtimeAPI(t)
	ann, token := a.user("Ann")
	conv := a.conversation("", []string{ann})
	// A client with a deadline: were the request to hang, the test fails
	// with a timeout rather than waiting for the suite's.
	c := a.loadClient(t, 10*time.Second)
	r, err := c.query(context.Background(), token, messageAddedSubscription, map[string]any{"c": conv})
	if err != nil {
		t.Fatalf("POST subscription: %v", err)
	}
	if code := r.code(t); code != graph.CodeBadUserInput || !strings.Contains(string(r.Raw), "text/event-stream") {
		t.Errorf("POST subscription: code %s, body %s; want BAD_USER_INPUT naming the transports", code, r.Raw)
	}
	a.waitReleased()
}
