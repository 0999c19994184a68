package document

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/parser"
)

func mustParse(t testing.TB, query string) *ast.QueryDocument {
	t.Helper()
	doc, err := parser.ParseQuery(&ast.Source{Input: query})
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// TestCount: fields count once per occurrence, spreads and inline
// fragments count as selections, fragment definitions once however often
// they are spread, and depth goes through spreads.
func TestCount(t *testing.T) {
	for _, tc := range []struct {
		query                   string
		fields, fragments, deep int
	}{
		{"{ a }", 1, 0, 1},
		{"{ a b: a c: a }", 3, 0, 1},
		{"{ a { b { c } } }", 3, 0, 3},
		{"{ ... on Q { a { b } } }", 2, 1, 2},
		{"{ ...F ...F ...F } fragment F on Q { a { b } }", 2, 3, 2},
		{"{ x { ...F } } fragment F on Q { a { ...G } } fragment G on Q { b { c } }", 4, 2, 4},
		// A cycle (validation refuses it) ends the walk.
		{"{ ...F } fragment F on Q { a { ...F } }", 1, 2, 2},
		// An unknown fragment (validation refuses it) adds nothing.
		{"{ a { ...Nope } }", 1, 1, 2},
	} {
		c := Count(mustParse(t, tc.query))
		if c.Fields != tc.fields || c.Fragments != tc.fragments || c.Depth != tc.deep {
			t.Errorf("%s: fields %d fragments %d depth %d, want %d %d %d", tc.query, c.Fields, c.Fragments, c.Depth, tc.fields, tc.fragments, tc.deep)
		}
	}
}

// TestCountLinear: fragments spread twice at each of 40 levels would be
// 2^40 fields expanded; counting them as written is instant.
func TestCountLinear(t *testing.T) {
	var b strings.Builder
	b.WriteString("{ ...F0 ...F0 }")
	for i := range 40 {
		fmt.Fprintf(&b, " fragment F%d on Q { a { ...F%d ...F%d } }", i, i+1, i+1)
	}
	b.WriteString(" fragment F40 on Q { leaf }")
	c := Count(mustParse(t, b.String()))
	if c.Fields != 41 || c.Fragments != 82 || c.Depth != 41 {
		t.Errorf("got %+v, want 41 fields, 82 fragments, depth 41", c)
	}
}

// TestLimits: each limit refuses one over it with QUERY_TOO_LARGE naming
// the limit and its value, and accepts one at it.
func TestLimits(t *testing.T) {
	l := Limits{Tokens: 30, Fields: 5, Depth: 3}
	for _, tc := range []struct {
		query, refusal string
	}{
		{"{ a b c d e }", ""},
		{"{ a b c d e f }", "at most 5 fields"},
		{"{ a ...F ... on Q { c } } fragment F on Q { d }", ""},
		{"{ a ...F ...F ... on Q { c } } fragment F on Q { d }", "at most 5 fields"},
		{"{ a { b { c } } }", ""},
		{"{ a { b { c { d } } } }", "at most 3 levels"},
		{"{ a { ...F } } fragment F on Q { b { c { d } } }", "at most 3 levels"},
		{"{ " + strings.Repeat("a ", 28) + "}", "at most 5 fields"},
		{"{ " + strings.Repeat("a ", 29) + "}", "at most 30 tokens"},
	} {
		doc, err := l.Parse(tc.query)
		if err == nil {
			err = l.Check(doc)
		}
		switch {
		case tc.refusal == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.query, err)
		case tc.refusal != "" && err == nil:
			t.Errorf("%s: accepted, want %q", tc.query, tc.refusal)
		case err != nil && (err.Extensions["code"] != CodeTooLarge || !strings.Contains(err.Message, tc.refusal)):
			t.Errorf("%s: %v (%v), want %s %q", tc.query, err.Message, err.Extensions["code"], CodeTooLarge, tc.refusal)
		}
	}
	// A syntax error stays the parser's, for gqlgen to report.
	if _, err := l.Parse("{ a "); err == nil || err.Extensions["code"] == CodeTooLarge {
		t.Errorf("syntax error: %v", err)
	}
}

// TestClientDocuments: GraphiQL's introspection query and the Inbox are
// far within the default limits.
func TestClientDocuments(t *testing.T) {
	introspection, err := os.ReadFile("testdata/introspection.graphql")
	if err != nil {
		t.Fatal(err)
	}
	l := Limits{}.WithDefaults()
	doc, gqlErr := l.Parse(string(introspection))
	if gqlErr != nil {
		t.Fatal(gqlErr)
	}
	if err := l.Check(doc); err != nil {
		t.Fatal(err)
	}
	c := Count(doc)
	t.Logf("introspection: %d selections, depth %d, %d nodes, %d bytes", c.Selections(), c.Depth, c.Nodes, len(introspection))
}

// TestCacheBound: the cache never holds more than its budget, evicts the
// least recently used first, and keeps nothing heavier than the budget.
func TestCacheBound(t *testing.T) {
	ctx := context.Background()
	c := NewCache(10_000)
	q := c.Queries()
	for i := range 100 {
		q.Add(ctx, fmt.Sprintf("h%d", i), strings.Repeat("x", 1000))
		if c.Bytes() > c.MaxBytes() {
			t.Fatalf("after %d: %d bytes, over %d", i, c.Bytes(), c.MaxBytes())
		}
	}
	if _, ok := q.Get(ctx, "h0"); ok {
		t.Error("the oldest entry survived")
	}
	if _, ok := q.Get(ctx, "h99"); !ok {
		t.Error("the newest entry was evicted")
	}
	// Using an entry keeps it.
	q.Get(ctx, "h95")
	for i := 100; i < 105; i++ {
		q.Add(ctx, fmt.Sprintf("h%d", i), strings.Repeat("x", 1000))
	}
	if _, ok := q.Get(ctx, "h95"); !ok {
		t.Error("a recently used entry was evicted")
	}
	before := c.Bytes()
	q.Add(ctx, "huge", strings.Repeat("x", 20_000))
	if _, ok := q.Get(ctx, "huge"); ok || c.Bytes() != before {
		t.Errorf("an entry over the budget was kept (%d bytes)", c.Bytes())
	}
	// Documents share the budget.
	d := c.Documents()
	query := "{ " + strings.Repeat("a ", 10) + "}"
	d.Add(ctx, query, mustParse(t, query))
	if _, ok := d.Get(ctx, query); !ok || c.Bytes() > c.MaxBytes() {
		t.Errorf("document: %d bytes", c.Bytes())
	}
}

// TestWeight: a parsed document's weight is no less than the heap it
// keeps alive, for dense and sparse documents alike.
func TestWeight(t *testing.T) {
	var aliases strings.Builder
	for i := range 500 {
		fmt.Fprintf(&aliases, "a%d: __typename @include(if: true) @skip(if: false) ", i)
	}
	introspection, _ := os.ReadFile("testdata/introspection.graphql")
	for name, query := range map[string]string{
		"repeated":      "{ " + strings.Repeat("a ", 500) + "}",
		"directives":    "{ " + aliases.String() + "}",
		"long string":   `{ user(id: "` + strings.Repeat("x", 60_000) + `") { id } }`,
		"introspection": string(introspection),
	} {
		heap := heapOf(t, query)
		w := Weight(query, mustParse(t, query))
		t.Logf("%s: weight %d, heap %d (%.2f)", name, w, heap, float64(w)/float64(heap))
		if w < heap {
			t.Errorf("%s: weight %d under the %d bytes it keeps", name, w, heap)
		}
	}
}

// heapOf is the heap a parsed copy of query keeps alive (text included).
func heapOf(t *testing.T, query string) int {
	const n = 20
	docs := make([]*ast.QueryDocument, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range docs {
		docs[i] = mustParse(t, strings.Clone(query))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(docs)
	return int(after.HeapAlloc-before.HeapAlloc) / n
}

// FuzzCount: counting never panics or loops on anything the parser
// accepts, and its counts agree with the limits' decisions.
func FuzzCount(f *testing.F) {
	for _, seed := range []string{
		"{ a }",
		"{ a { b { c } } }",
		"{ ...F ...F } fragment F on Q { a { ...F } }",
		"query($v: [Int] = [1, [2, [3]]]) { a(x: {y: [1, 2], z: {w: $v}}) @d(if: true) { ... on Q { b } } }",
		"{ a: b c: d ... @include(if: true) { e } }",
		"fragment F on Q { a } fragment F on Q { b } { ...F }",
		"{ x { ...Missing } }",
	} {
		f.Add(seed)
	}
	introspection, err := os.ReadFile("testdata/introspection.graphql")
	if err == nil {
		f.Add(string(introspection))
	}
	l := Limits{Tokens: 500, Fields: 50, Depth: 8}
	f.Fuzz(func(t *testing.T, query string) {
		doc, err := l.Parse(query)
		if err != nil {
			return
		}
		c := Count(doc)
		if c.Fields < 0 || c.Fragments < 0 || c.Depth < 0 || c.Nodes < c.Fields+c.Fragments {
			t.Fatalf("counts %+v", c)
		}
		refused := l.Check(doc) != nil
		if refused != (c.Selections() > l.Fields || c.Depth > l.Depth) {
			t.Fatalf("counts %+v, refused %v", c, refused)
		}
	})
}
