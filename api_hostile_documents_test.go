package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"chatql/document"
	"chatql/graph"
)

// The hostile-document tests: documents built to be expensive to parse,
// validate or keep, through the real HTTP handler. Over a limit is a
// QUERY_TOO_LARGE request error, decided before validation, without a
// database connection; and nothing refused is kept.

// aliasDocument is `{ a0: __typename … }` with n aliases prefixed p.
func aliasDocument(p string, n int) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		fmt.Fprintf(&b, " %s%d: __typename", p, i)
	}
	return b.String() + " }"
}

// deepDocument nests introspection's ofType to depth levels.
func deepDocument(depth int) string {
	// __type (1) then ofType levels, with name at the bottom.
	inner := depth - 2
	return `{ __type(name: "Query") {` + strings.Repeat(" ofType {", inner) + " name" + strings.Repeat(" }", inner) + " } }"
}

func sha(query string) string {
	sum := sha256.Sum256([]byte(query))
	return hex.EncodeToString(sum[:])
}

// TestHostileDocumentLimits: each limit refuses one over it with
// QUERY_TOO_LARGE naming the limit, before validation and without a
// database connection; documents at each limit run.
func TestHostileDocumentLimits(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	fields := document.DefaultMaxFields
	fragments := func(n int) string {
		return "{" + strings.Repeat(" ...F", n-1) + " } fragment F on Query { __typename }"
	}
	for _, tc := range []struct {
		name, query, want string
	}{
		// 176 KB; validating it would take seconds of CPU.
		{"16,000 __typename", "{" + strings.Repeat("__typename ", 16000) + "}", fmt.Sprintf("at most %d tokens", document.DefaultMaxTokens)},
		{"too many fields", "{" + strings.Repeat(" __typename", fields+1) + " }", fmt.Sprintf("at most %d fields", fields)},
		{"too many aliases", aliasDocument("a", fields+1), fmt.Sprintf("at most %d fields", fields)},
		{"too many fragment spreads", fragments(fields + 1), fmt.Sprintf("at most %d fields", fields)},
		{"too deep", deepDocument(document.DefaultMaxDepth + 1), fmt.Sprintf("at most %d levels", document.DefaultMaxDepth)},
	} {
		start := time.Now()
		r := a.post("", tc.query, nil)
		expectRequestError(t, tc.name, r, document.CodeTooLarge)
		if len(r.Errors) == 1 && !strings.Contains(r.Errors[0].Message, tc.want) {
			t.Errorf("%s: message %q does not say %q", tc.name, r.Errors[0].Message, tc.want)
		}
		if len(r.Raw) > 400 {
			t.Errorf("%s: %d-byte answer: %.300s", tc.name, len(r.Raw), r.Raw)
		}
		// Generous for -race on a loaded machine: unguarded, the first
		// takes seconds without -race.
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: refused after %v", tc.name, d)
		}
	}
	for _, tc := range []struct{ name, query string }{
		{"fields at the limit", "{" + strings.Repeat(" __typename", fields) + " }"},
		{"aliases at the limit", aliasDocument("a", fields)},
		{"fragment spreads at the limit", fragments(fields)},
		{"depth at the limit", deepDocument(document.DefaultMaxDepth)},
	} {
		r := a.post("", tc.query, nil)
		checkProtocol(t, r)
		if len(r.Errors) != 0 {
			t.Errorf("%s: %s", tc.name, r.Errors[0].Message)
		}
	}
	if n := a.pool.Stats().AcquireCount; n != 0 {
		t.Errorf("documents needing no database borrowed %d connections", n)
	}
	// A syntax error stays a parse error.
	expectRequestError(t, "syntax error", a.post("", "{ __typename", nil), "GRAPHQL_PARSE_FAILED")
}

// TestHostileDocumentClients: what real clients send is far within the
// limits: GraphiQL's introspection query and the Inbox.
func TestHostileDocumentClients(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	introspection, err := os.ReadFile("document/testdata/introspection.graphql")
	if err != nil {
		t.Fatal(err)
	}
	r := a.post("", string(introspection), nil)
	checkProtocol(t, r)
	if len(r.Errors) != 0 || !strings.Contains(string(r.Data), `"queryType"`) {
		t.Errorf("introspection: %.300s", r.Raw)
	}
	token, _ := a.seedInbox(2, 3)
	r = a.post(token, graph.InboxQuery, nil)
	checkProtocol(t, r)
	if len(r.Errors) != 0 {
		t.Errorf("inbox: %s", r.Errors[0].Message)
	}
}

// TestHostileDocumentCacheBound: 100 distinct 60 KB documents, cheap to
// validate, sent plainly and as persisted queries, never grow the cache
// past its budget; documents refused (by a limit, by validation) are not
// kept, and a refused persisted query is not remembered.
func TestHostileDocumentCacheBound(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	_, token := a.user("Ann")
	limit := a.queryCache.MaxBytes()
	long := strings.Repeat("x", 60_000)
	peak := 0
	for i := range 100 {
		query := fmt.Sprintf(`{ user(id: "%d%s") { id } }`, i, long)
		r := a.post(token, query, nil)
		checkProtocol(t, r)
		apq := fmt.Sprintf(`{ apq: user(id: "%d%s") { id } }`, i, long)
		r = a.postBody(bearer(token), apqBody(apq, sha(apq)))
		checkProtocol(t, r)
		if i == 0 && len(r.Data) == 0 {
			t.Fatalf("persisted query did not run: %.300s", r.Raw)
		}
		n := a.queryCache.Bytes()
		if n > limit {
			t.Fatalf("after %d documents the cache holds %d bytes, over its %d", 2*(i+1), n, limit)
		}
		peak = max(peak, n)
	}
	if peak < limit/2 {
		t.Errorf("the cache peaked at %d bytes of %d: the documents were not kept", peak, limit)
	}

	// Refused documents leave the cache as it was.
	before, entries := a.queryCache.Bytes(), a.queryCache.Len()
	tooMany := aliasDocument("z", document.DefaultMaxFields+1)
	invalid := `{ nosuchfield }`
	expectRequestError(t, "too large", a.post("", tooMany, nil), document.CodeTooLarge)
	expectRequestError(t, "too large, persisted", a.postBody("", apqBody(tooMany, sha(tooMany))), document.CodeTooLarge)
	expectRequestError(t, "invalid, persisted", a.postBody("", apqBody(invalid, sha(invalid))), "GRAPHQL_VALIDATION_FAILED")
	if a.queryCache.Bytes() != before || a.queryCache.Len() != entries {
		t.Errorf("refused documents changed the cache: %d bytes in %d entries, was %d in %d", a.queryCache.Bytes(), a.queryCache.Len(), before, entries)
	}
	for _, q := range []string{tooMany, invalid} {
		r := a.postBody("", apqBody("", sha(q)))
		if code := r.code(t); code != document.CodePersistedQueryNotFound {
			t.Errorf("a refused persisted query was remembered: %s", r.Raw)
		}
	}
}

// BenchmarkHostileDocumentsHeap: distinct documents of the largest kind
// the limits accept (QUERY_MAX_FIELDS aliases with two directives each:
// the most syntax-tree nodes per document), one per iteration, through
// the handler. It reports the heap's growth after a collection, and what
// the cache holds. For the README's figure:
//
//	go test -run '^$' -bench HostileDocumentsHeap -benchtime 1000x .
func BenchmarkHostileDocumentsHeap(b *testing.B) {
	a := newAPI(b)
	_, token := a.user("Ann")
	doc := func(i int) string {
		var s strings.Builder
		s.WriteString("{")
		for j := range document.DefaultMaxFields {
			fmt.Fprintf(&s, " d%d_%d: __typename @include(if: true) @skip(if: false)", i, j)
		}
		return s.String() + " }"
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := range b.N {
		r := a.post(token, doc(i), nil)
		if len(r.Errors) != 0 {
			b.Fatalf("document %d: %s", i, r.Errors[0].Message)
		}
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/(1<<20), "heap-growth-MiB")
	b.ReportMetric(float64(a.queryCache.Bytes())/(1<<20), "cache-MiB")
	b.ReportMetric(float64(a.queryCache.Len()), "cached-docs")
}
