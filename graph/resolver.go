// Package graph owns chatql's GraphQL layer: the generated executable
// schema, the resolvers, the dataloaders, the operation middleware that
// gives every operation its own scope on the pool, and error presentation.
package graph

//go:generate go tool gqlgen generate

import (
	"log/slog"
	"time"

	"github.com/99designs/gqlgen/graphql"

	"chatql/admission"
	"chatql/auth"
	"chatql/dbpool"
	"chatql/document"
	"chatql/realtime"
	"chatql/web"
)

// Options configure the GraphQL endpoint.
type Options struct {
	Pool   *dbpool.Pool
	Tokens *auth.Tokens
	Logger *slog.Logger
	// Hub announces new messages to messageAdded subscriptions; nil
	// refuses them.
	Hub *realtime.Hub
	// AutoProvision creates the user row on a Supabase user's first request.
	AutoProvision bool
	// AllowAnonymous accepts Supabase anonymous sign-ins; when false their
	// operations that need a viewer are FORBIDDEN.
	AllowAnonymous bool
	// Introspection allows schema introspection (the playground needs it).
	Introspection bool
	// DBStats adds extensions.db {statements, acquireWaitMs, holdMs} to
	// every response.
	DBStats bool
	// ComplexityLimit refuses operations costlier than this; 0 means
	// DefaultComplexityLimit.
	ComplexityLimit int
	// DocumentLimits bound a document's tokens, selections and depth
	// before it is validated; zero fields mean the defaults.
	DocumentLimits document.Limits
	// DocumentCache holds parsed documents and persisted queries within a
	// budget in bytes; nil means a cache of document.DefaultCacheBytes.
	DocumentCache *document.Cache
	// OnOperation, when set, is told each query and mutation's type,
	// outcome ("ok" or the first error code) and duration (for metrics).
	OnOperation func(opType, outcome string, d time.Duration)
	// FieldMiddleware, when set, wraps every field resolver (tracing; tests
	// use it to make a resolver fail or panic).
	FieldMiddleware graphql.FieldMiddleware
	// AllowedOrigins are the browser origins of other sites allowed to use
	// the API: CORS for HTTP, the Origin check for websockets. An entry is
	// an origin (https://app.example.com, http://localhost:5173), may use *
	// in its host (https://*.example.com), or is "*" for any origin. Empty
	// means same-origin only. Requests without an Origin header (anything
	// but a browser) are not affected.
	AllowedOrigins []string
	// Streams, when set, registers the handler's websockets and SSE
	// streams, so that the server can end them when it shuts down.
	Streams *web.Streams
	// Passwords runs signUp's and signIn's bcrypt under a concurrency
	// limit; nil means auth.DefaultPasswords.
	Passwords *auth.Passwords
	// SignInLimits limit failed sign-ins and sign-ups per client; the zero
	// value limits nothing.
	SignInLimits SignInLimits
	// TrustedProxies are the proxies whose X-Forwarded-For or Forwarded
	// header says who the client is (for SignInLimits); none by default.
	TrustedProxies web.TrustedProxies
	// Admission admits operations per principal (the user of a valid
	// token, else the client address); nil admits everything.
	Admission *admission.Controller
}

// Resolver holds the long-lived dependencies of the resolvers. Nothing
// request-scoped lives here: per-operation state travels in the context.
type Resolver struct {
	opts Options
	// messages loads announced messages for messageAdded subscribers:
	// shared by them all, and holding no connection.
	messages *announcements
	// signIns counts sign-in failures and sign-ups per client.
	signIns *signInGuard
}
