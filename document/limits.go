package document

import (
	"context"
	"fmt"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"github.com/vektah/gqlparser/v2/parser"
)

// CodeTooLarge is the code of a document refused by a limit before it was
// validated.
const CodeTooLarge = "QUERY_TOO_LARGE"

func init() {
	// A refused document is a request error: the same HTTP status as a
	// parse or validation error.
	errcode.RegisterErrorType(CodeTooLarge, errcode.KindProtocol)
}

// The default limits. The largest document they accept costs at most
// about 50 ms of CPU to parse, count and validate, whatever its shape (the
// README's Document limits section has the measurements: the costliest
// shape, same-named fields with different arguments, is quadratic in
// gqlparser's validation and takes about 30 ms at 400). The clients' own
// documents are far below them: graphql-js's introspection query, every
// option on, is 180 tokens, 77 selections and depth 15; the Inbox 55
// tokens, 23 selections and depth 7.
const (
	DefaultMaxTokens = 10000
	DefaultMaxFields = 400
	DefaultMaxDepth  = 32
)

// Limits bound a document before it is validated. A zero field means the
// default.
type Limits struct {
	// Tokens bounds the lexical tokens (names, punctuation, values; not
	// comments), enforced by the parser as it reads: a document over it is
	// never parsed whole.
	Tokens int
	// Fields bounds the selections as written: every field occurrence
	// (aliases included), every fragment spread and every inline fragment.
	// Fields inside a fragment definition count once, however often it is
	// spread.
	Fields int
	// Depth bounds how deeply selection sets nest, through fragments.
	Depth int
}

// WithDefaults returns l with the zero limits set to the defaults.
func (l Limits) WithDefaults() Limits {
	if l.Tokens <= 0 {
		l.Tokens = DefaultMaxTokens
	}
	if l.Fields <= 0 {
		l.Fields = DefaultMaxFields
	}
	if l.Depth <= 0 {
		l.Depth = DefaultMaxDepth
	}
	return l
}

// Parse parses query with l's token limit. A document over the limit is
// a QUERY_TOO_LARGE error; a syntax error is returned as the parser's own
// error (gqlgen reports it as GRAPHQL_PARSE_FAILED).
func (l Limits) Parse(query string) (*ast.QueryDocument, *gqlerror.Error) {
	l = l.WithDefaults()
	doc, err := parser.ParseQueryWithTokenLimit(&ast.Source{Input: query}, l.Tokens)
	if err != nil {
		gqlErr, ok := err.(*gqlerror.Error)
		if !ok {
			gqlErr = gqlerror.WrapIfUnwrapped(err)
		}
		// gqlparser's only signal is its message ("exceeded token limit
		// of N"); a syntax error always has a location, this one none.
		if len(gqlErr.Locations) == 0 && strings.Contains(gqlErr.Message, "token limit") {
			return nil, tooLarge("tokens", l.Tokens)
		}
		return nil, gqlErr
	}
	return doc, nil
}

// Check refuses a parsed document over l's field or depth limit.
func (l Limits) Check(doc *ast.QueryDocument) *gqlerror.Error {
	l = l.WithDefaults()
	c := Count(doc)
	if c.Selections() > l.Fields {
		return tooLarge("fields (fields, aliases, fragment spreads and inline fragments as written)", l.Fields)
	}
	if c.Depth > l.Depth {
		return tooLarge("levels of nesting", l.Depth)
	}
	return nil
}

// tooLarge names the limit and its value, never the document.
func tooLarge(what string, limit int) *gqlerror.Error {
	err := &gqlerror.Error{
		Message: fmt.Sprintf("the document is too large: this server accepts at most %d %s per document; split it or use fragments", limit, what),
	}
	errcode.Set(err, CodeTooLarge)
	return err
}

// Guard is a gqlgen extension that enforces Limits before gqlgen validates
// a document. gqlgen's executor has no hook between parsing and
// validation, but operation parameter mutators run before both: Guard
// looks the query up in the parsed-document cache (a hit passed the
// limits already) and otherwise parses it itself with the token limit
// (linear, and a few microseconds per hundred tokens) and counts it.
// gqlgen then parses it again to validate it; the server sets the same
// token limit on gqlgen's parser.
//
// Use it after the persisted-query extension, which turns a hash into the
// query text.
type Guard struct {
	Limits Limits
	// Cache is the server's parsed-document cache (nil: none).
	Cache graphql.Cache[*ast.QueryDocument]
}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationParameterMutator
} = Guard{}

func (Guard) ExtensionName() string { return "DocumentLimits" }

func (Guard) Validate(graphql.ExecutableSchema) error { return nil }

func (g Guard) MutateOperationParameters(ctx context.Context, p *graphql.RawParams) *gqlerror.Error {
	if p.Query == "" {
		return nil // gqlgen refuses it: no operation
	}
	if g.Cache != nil {
		if _, ok := g.Cache.Get(ctx, p.Query); ok {
			return nil
		}
	}
	doc, err := g.Limits.Parse(p.Query)
	if err != nil {
		if err.Extensions["code"] == CodeTooLarge {
			return err
		}
		return nil // a syntax error: gqlgen's parser reports it
	}
	return g.Limits.Check(doc)
}
