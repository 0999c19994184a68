package graph

import (
	"context"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
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
