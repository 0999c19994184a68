package graph

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/executor"
	"github.com/99designs/gqlgen/graphql/handler/extension"

	"chatql/dbpool"
	"chatql/document"
)

// The cost of a document before it runs: the document guard, gqlgen's
// parse and validation, and the complexity limit, as the server does them
// for a document it has not cached (executor.CreateOperationContext with
// the server's extensions). BenchmarkDocumentCost measures it by shape
// and size; run it with
//
//	go test -run '^$' -bench DocumentCost -benchtime 20x ./graph
//
// It takes about a minute.

// docShape builds a document of a shape at about n selections.
type docShape struct {
	name  string
	build func(n int) string
}

var docShapes = []docShape{
	// One field repeated: the worst case of gqlparser's
	// OverlappingFieldsCanBeMerged, which compares every pair.
	{"repeated", func(n int) string { return "{ " + strings.Repeat("__typename ", n) + "}" }},
	// The same field with a selection set, repeated: every pair's children
	// are compared too.
	{"repeated-object", func(n int) string { return "{ " + strings.Repeat("me { id } ", n/2) + "}" }},
	// The same response name for different arguments: every pair is a
	// conflict, reported.
	{"conflicts", func(n int) string {
		var b strings.Builder
		b.WriteString("{ ")
		for i := range n / 2 {
			fmt.Fprintf(&b, `u: user(id: "%d") { id } `, i)
		}
		return b.String() + "}"
	}},
	{"aliases", func(n int) string {
		var b strings.Builder
		b.WriteString("{ ")
		for i := range n {
			fmt.Fprintf(&b, "a%d: __typename ", i)
		}
		return b.String() + "}"
	}},
	// Distinct fragments spread side by side (a spread and a field each).
	{"fragments", func(n int) string {
		var spreads, defs strings.Builder
		for i := range n / 2 {
			fmt.Fprintf(&spreads, "...F%d ", i)
			fmt.Fprintf(&defs, "fragment F%d on Query { f%d: __typename } ", i, i)
		}
		return "{ " + spreads.String() + "} " + defs.String()
	}},
	// One fragment spread n times.
	{"same-spread", func(n int) string {
		return "{ " + strings.Repeat("...F ", n-1) + "} fragment F on Query { __typename }"
	}},
	// One fragment holding every field.
	{"one-fragment", func(n int) string {
		var b strings.Builder
		for i := range n - 1 {
			fmt.Fprintf(&b, "a%d: __typename ", i)
		}
		return "{ ...F } fragment F on Query { " + b.String() + "}"
	}},
	// A mutation of aliased sendMessage calls with input objects.
	{"mutation", func(n int) string {
		var b strings.Builder
		b.WriteString("mutation { ")
		for i := range n / 2 {
			fmt.Fprintf(&b, `m%d: sendMessage(input: {conversationId: "c%d", body: "hello, this is message number %d"}) { id } `, i, i, i)
		}
		return b.String() + "}"
	}},
	// Every field nested in the previous one.
	{"deep", func(n int) string {
		var b strings.Builder
		b.WriteString(`{ conversation(id: "x") { `)
		units := max(0, (n-2)/3)
		for range units {
			b.WriteString("messages { nodes { conversation { ")
		}
		b.WriteString("id")
		return b.String() + strings.Repeat(" } } }", units) + " } }"
	}},
}

// costExecutor is gqlgen's executor with the server's document and
// complexity extensions, without a cache: every call parses and validates.
func costExecutor(limits document.Limits) *executor.Executor {
	cfg := Config{Resolvers: &Resolver{}}
	setComplexity(&cfg.Complexity, statementCost(DefaultComplexityLimit, dbpool.DefaultMaxStatements))
	e := executor.New(NewExecutableSchema(cfg))
	e.SetParserTokenLimit(limits.Tokens)
	e.Use(extension.Introspection{})
	e.Use(document.Guard{Limits: limits})
	e.Use(extension.FixedComplexityLimit(DefaultComplexityLimit))
	return e
}

// unlimited lets any document through the guard, to measure what the
// limits save.
var unlimited = document.Limits{Tokens: 1 << 30, Fields: 1 << 30, Depth: 1 << 30}

// accepted reports whether the default limits let query through.
func accepted(query string) bool {
	l := document.Limits{}.WithDefaults()
	doc, err := l.Parse(query)
	return err == nil && l.Check(doc) == nil
}

// largestAccepted is the largest n whose document the default limits
// accept, by bisection (sizes are monotonic in n).
func largestAccepted(s docShape) int {
	lo, hi := 2, 4096
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if accepted(s.build(mid)) {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

func benchCreate(b *testing.B, e *executor.Executor, query string) {
	b.Helper()
	ctx := graphql.StartOperationTrace(context.Background())
	b.ReportAllocs()
	for b.Loop() {
		_, _ = e.CreateOperationContext(ctx, &graphql.RawParams{Query: query})
	}
}

func BenchmarkDocumentCost(b *testing.B) {
	open := costExecutor(unlimited)
	guarded := costExecutor(document.Limits{}.WithDefaults())
	// The cost curve, without limits: size against CPU.
	for _, s := range docShapes {
		for _, n := range []int{125, 250, 500, 1000} {
			b.Run(fmt.Sprintf("curve/%s/n=%d", s.name, n), func(b *testing.B) { benchCreate(b, open, s.build(n)) })
		}
	}
	// The largest document of each shape the default limits accept, and
	// the smallest they refuse (what a refusal costs).
	for _, s := range docShapes {
		n := largestAccepted(s)
		b.Run(fmt.Sprintf("accepted/%s/n=%d", s.name, n), func(b *testing.B) { benchCreate(b, guarded, s.build(n)) })
		b.Run(fmt.Sprintf("refused/%s/n=%d", s.name, n+1), func(b *testing.B) { benchCreate(b, guarded, s.build(n+1)) })
	}
	introspection, err := os.ReadFile("../document/testdata/introspection.graphql")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("accepted/introspection", func(b *testing.B) { benchCreate(b, guarded, string(introspection)) })
	b.Run("accepted/inbox", func(b *testing.B) { benchCreate(b, guarded, InboxQuery) })
	// Hostile documents the limits refuse: the cost of refusing them.
	b.Run("refused/16000-typename", func(b *testing.B) {
		benchCreate(b, guarded, "{"+strings.Repeat("__typename ", 16000)+"}")
	})
	b.Run("refused/1MiB-95000-fields", func(b *testing.B) {
		benchCreate(b, guarded, "{"+strings.Repeat("a b c d e ", 19000)+"}")
	})
}

// TestDocumentShapesAtLimit: every shape's largest accepted document is
// valid GraphQL for this schema (so that the benchmark measures work, not
// an early validation error), except conflicts, whose every pair is the
// validation error it measures.
func TestDocumentShapesAtLimit(t *testing.T) {
	e := costExecutor(document.Limits{}.WithDefaults())
	sizes := map[string]int{}
	for _, s := range docShapes {
		n := largestAccepted(s)
		sizes[s.name] = n
		_, errs := e.CreateOperationContext(graphql.StartOperationTrace(context.Background()), &graphql.RawParams{Query: s.build(n)})
		for _, err := range errs {
			code, _ := err.Extensions["code"].(string)
			// conflicts is refused by validation on purpose: the cost is
			// in finding every conflicting pair.
			if code == "GRAPHQL_VALIDATION_FAILED" && s.name == "conflicts" {
				continue
			}
			if code != "COMPLEXITY_LIMIT_EXCEEDED" {
				t.Errorf("%s at n=%d: %v (%s)", s.name, n, err, code)
			}
		}
	}
	names := make([]string, 0, len(sizes))
	for name := range sizes {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Logf("%s: largest accepted n=%d", name, sizes[name])
	}
}
