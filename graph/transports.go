package graph

import (
	"context"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"github.com/vektah/gqlparser/v2/lexer"
)

// subscriptionTransports refuses a subscription sent as a plain POST (no
// websocket, no Accept: text/event-stream) before it starts: gqlgen's POST
// transport would run it, wait for the first event and answer with that
// alone, so the request would hang until the next message arrives.
type subscriptionTransports struct{}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = subscriptionTransports{}

func (subscriptionTransports) ExtensionName() string { return "SubscriptionTransports" }

func (subscriptionTransports) Validate(graphql.ExecutableSchema) error { return nil }

func (subscriptionTransports) MutateOperationContext(_ context.Context, opCtx *graphql.OperationContext) *gqlerror.Error {
	if opCtx.Operation == nil || opCtx.Operation.Operation != ast.Subscription {
		return nil
	}
	// A websocket's operations carry the headers of its upgrade request.
	if opCtx.Headers.Get("Upgrade") != "" || strings.Contains(opCtx.Headers.Get("Accept"), "text/event-stream") {
		return nil
	}
	return &gqlerror.Error{
		Message:    "subscriptions need a websocket to /query (graphql-transport-ws) or server-sent events (POST with Accept: text/event-stream)",
		Extensions: map[string]any{"code": CodeBadUserInput},
	}
}

// maxPeekTokens bounds the tokens isSubscription reads: a document longer
// than the document limits allow is refused anyway, whatever answers it.
const maxPeekTokens = 100_000

// isSubscription reports whether the operation of query that operationName
// names (the first one when it is empty) is a subscription. The content
// negotiation uses it to stream subscriptions to clients that accept
// text/event-stream among other types, before gqlgen parses the document:
// it only reads the tokens at the top level of the document, where each
// definition starts with its keyword, and takes anything it cannot read
// as not a subscription (the transport then reports the error).
func isSubscription(query, operationName string) bool {
	lex := lexer.New(&ast.Source{Input: query})
	depth := 0
	fragment := false // in a fragment's header, before its selection set
	for range maxPeekTokens {
		tok, err := lex.ReadToken()
		if err != nil || tok.Kind == lexer.EOF {
			return false
		}
		switch tok.Kind {
		case lexer.BraceL, lexer.ParenL, lexer.BracketL:
			if depth == 0 && tok.Kind == lexer.BraceL {
				if !fragment && operationName == "" {
					return false // an anonymous query ({ ... }) comes first
				}
				fragment = false
			}
			depth++
		case lexer.BraceR, lexer.ParenR, lexer.BracketR:
			depth--
		case lexer.Name:
			if depth != 0 || fragment {
				continue // inside a definition, or a fragment's name and type
			}
			kind := tok.Value
			if kind == "fragment" {
				fragment = true
				continue
			}
			if kind != "query" && kind != "mutation" && kind != "subscription" {
				continue // fragment names, type conditions
			}
			name := ""
			next, err := lex.ReadToken()
			if err != nil {
				return false
			}
			if next.Kind == lexer.Name {
				name = next.Value
			} else if next.Kind == lexer.BraceL || next.Kind == lexer.ParenL {
				depth++
			}
			if operationName == "" || name == operationName {
				return kind == "subscription"
			}
		}
	}
	return false
}
