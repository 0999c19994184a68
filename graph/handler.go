package graph

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	coderws "github.com/coder/websocket"

	"chatql/auth"
	"chatql/document"
	"chatql/graph/model"
	"chatql/web"
)

// DefaultComplexityLimit is far above what the inbox query costs (about
// 2,000) and far below what a deliberately deep or wide query costs: list
// fields multiply their children's cost by their page size.
const DefaultComplexityLimit = 20000

// CodeComplexityLimit is gqlgen's code for an operation over the limit.
const CodeComplexityLimit = "COMPLEXITY_LIMIT_EXCEEDED"

// listCost is what an unbounded list (participants) is assumed to hold.
const listCost = 10

// Websocket timings: a ping every 10 s finds a dead peer (and keeps
// proxies from closing an idle socket) within 20 s; a client has 10 s after
// connecting to send connection_init.
const (
	wsPingInterval = 10 * time.Second
	wsInitTimeout  = 10 * time.Second
)

func init() {
	// An operation over the complexity limit is refused before it runs;
	// registering the code makes it an HTTP 422 like other request errors.
	errcode.RegisterErrorType(CodeComplexityLimit, errcode.KindProtocol)
	errcode.RegisterErrorType(CodeForbidden, errcode.KindProtocol)
}

// NewHandler returns the GraphQL endpoint: websocket (subscriptions), GET
// and POST transports, CORS and the websocket Origin check for
// opts.AllowedOrigins, the document limits, a parsed-query cache,
// automatic persisted queries, a complexity limit, one signIn or signUp
// per operation, introspection when enabled, and the operation middleware.
func NewHandler(opts Options) http.Handler {
	if opts.ComplexityLimit == 0 {
		opts.ComplexityLimit = DefaultComplexityLimit
	}
	opts.DocumentLimits = opts.DocumentLimits.WithDefaults()
	if opts.DocumentCache == nil {
		opts.DocumentCache = document.NewCache(document.DefaultCacheBytes)
	}
	if opts.Streams == nil {
		opts.Streams = web.NewStreams()
	}
	if opts.Passwords == nil {
		opts.Passwords = auth.DefaultPasswords()
	}
	noWait, cancel := context.WithCancel(context.Background())
	cancel()
	state := &handlerState{
		opts:       opts,
		retryAfter: strconv.Itoa(max(1, int(opts.Pool.Config().Timeout.Seconds()/2))),
		noWait:     noWait,
		present:    errorPresenter(opts.Logger),
	}
	cfg := Config{Resolvers: &Resolver{opts: opts, messages: newAnnouncements(opts.Pool),
		signIns: newSignInGuard(opts.SignInLimits, nil)}}
	setComplexity(&cfg.Complexity, statementCost(opts.ComplexityLimit, opts.Pool.Config().MaxStatements))

	srv := handler.New(NewExecutableSchema(cfg))
	// First: the websocket transport claims any request with an Upgrade
	// header, which the others would refuse.
	srv.AddTransport(transport.Websocket{
		KeepAlivePingInterval: wsPingInterval, // graphql-ws: "ka" messages
		PingPongInterval:      wsPingInterval, // graphql-transport-ws: ping, pong within 2x or closed
		InitTimeout:           wsInitTimeout,
		InitFunc:              wsInit(opts),
		// The same origin policy web.Wrap applies first (coder/websocket's
		// matching: same host, or a pattern matching scheme://host).
		Implementation: web.NewWebsocketImplementation(opts.Streams,
			coderws.AcceptOptions{OriginPatterns: opts.AllowedOrigins}),
		ErrorFunc: func(ctx context.Context, err error) {
			opts.Logger.DebugContext(ctx, "websocket error", "err", err)
		},
	})
	srv.AddTransport(transport.Options{})
	// web's GET and POST are gqlgen's, writing the response's data as it
	// is rather than marshalling it again.
	srv.AddTransport(web.GET{})
	// SSE must come before POST: POST does not look at Accept. web.Wrap
	// negotiates first and leaves Accept naming text/event-stream only
	// when the response is to be a stream.
	srv.AddTransport(transport.SSE{KeepAlivePingInterval: wsPingInterval})
	srv.AddTransport(web.POST{})
	// The parsed-document cache and the persisted queries share one budget
	// in bytes; gqlgen caches a document once it is validated (so one
	// refused later by the complexity limit stays, within the budget), and
	// the persisted queries keep a text only once its operation was
	// accepted.
	srv.SetQueryCache(opts.DocumentCache.Documents())
	srv.SetParserTokenLimit(opts.DocumentLimits.Tokens)
	srv.SetErrorPresenter(state.present)
	srv.SetRecoverFunc(recoverFunc(opts.Logger))
	if opts.Introspection {
		srv.Use(extension.Introspection{})
	} else {
		srv.Use(noIntrospection{})
	}
	// Order matters: the persisted queries turn a hash into its query,
	// which the guard then checks before gqlgen validates it.
	srv.Use(document.PersistedQueries{Cache: opts.DocumentCache.Queries()})
	srv.Use(document.Guard{Limits: opts.DocumentLimits, Cache: opts.DocumentCache.Documents()})
	srv.Use(subscriptionTransports{})
	srv.Use(&strictVariables{})
	srv.Use(oneSignIn{})
	srv.Use(extension.FixedComplexityLimit(opts.ComplexityLimit))
	srv.AroundOperations(state.aroundOperations)
	if opts.FieldMiddleware != nil {
		srv.AroundFields(opts.FieldMiddleware)
	} else {
		// A field middleware expects to see every field: the inbox is
		// rendered directly only without one.
		srv.AroundRootFields(renderInbox)
	}
	return web.Wrap(withUpgradeAuthorization(srv), web.Options{
		AllowedOrigins:   opts.AllowedOrigins,
		Streams:          opts.Streams,
		ForbiddenCode:    CodeForbidden,
		RequestErrorCode: CodeBadUserInput,
		IsSubscription:   isSubscription,
		TrustedProxies:   opts.TrustedProxies,
		Admission:        state.admitHTTP,
	})
}

// CloseForbidden is the websocket close code for a connection_init whose
// Authorization the server refuses.
const CloseForbidden = 4403

// upgradeAuthorizationKey carries the Authorization header of a websocket's
// upgrade request to wsInit, which decides the socket's one identity.
type upgradeAuthorizationKey struct{}

func withUpgradeAuthorization(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			r = r.WithContext(context.WithValue(r.Context(), upgradeAuthorizationKey{}, r.Header.Get("Authorization")))
		}
		next.ServeHTTP(w, r)
	})
}

// socketIdentity is who a websocket is signed in as, decided once by wsInit
// for all of the socket's operations.
type socketIdentity struct {
	identity    auth.Identity
	hasIdentity bool
}

type socketIdentityKey struct{}

// errTwoIdentities refuses a socket whose two tokens name different users.
var errTwoIdentities = errors.New("the connection_init payload and the upgrade request are signed in as different users")

// wsInit decides who a websocket is signed in as, once: the token in the
// connection_init payload when there is one (browsers cannot set headers
// on a websocket), else the upgrade request's Authorization header. A token
// that does not verify, or two tokens naming different users, close the
// socket with CloseForbidden before any operation runs; so does the chosen
// token's expiry, so that no subscription outlives its sign-in (clients
// reconnect with a fresh token). No token at all is allowed (poolStatus
// needs no sign-in). Operations take the identity from the connection
// context (newOperation). The returned ctx is never nil: gqlgen panics on
// a nil ctx returned with an error.
func wsInit(opts Options) transport.WebsocketInitFunc {
	verify := func(ctx context.Context, header string) (id auth.Identity, ok bool, err error) {
		raw, ok, err := auth.FromHeader(header)
		if err != nil || !ok {
			return auth.Identity{}, false, err
		}
		id, err = opts.Tokens.Verify(ctx, raw)
		return id, err == nil, err
	}
	return func(ctx context.Context, p transport.InitPayload) (context.Context, *transport.InitPayload, error) {
		upgradeHeader, _ := ctx.Value(upgradeAuthorizationKey{}).(string)
		payloadID, inPayload, err := verify(ctx, p.Authorization())
		var upgradeID auth.Identity
		var inUpgrade bool
		if err == nil {
			upgradeID, inUpgrade, err = verify(ctx, upgradeHeader)
		}
		reason := "invalid or expired access token"
		if err == nil && inPayload && inUpgrade && payloadID.UserID != upgradeID.UserID {
			err, reason = errTwoIdentities, "two different users in one connection"
		}
		if err != nil {
			// The legacy graphql-ws protocol sends the error's text to the
			// client as connection_error: only the reason, never the
			// verifier's detail.
			opts.Logger.DebugContext(ctx, "websocket sign-in refused", "err", err)
			ctx = transport.WithWebsocketCloseCode(ctx, CloseForbidden)
			ctx = transport.AppendCloseReason(ctx, reason)
			return ctx, nil, errors.New(reason)
		}
		who := socketIdentity{identity: payloadID, hasIdentity: inPayload}
		if !inPayload {
			who = socketIdentity{identity: upgradeID, hasIdentity: inUpgrade}
		}
		if who.hasIdentity && !who.identity.ExpiresAt.IsZero() {
			_ = web.CloseSocketAt(ctx, who.identity.ExpiresAt, CloseForbidden, "access token expired")
		}
		return context.WithValue(ctx, socketIdentityKey{}, who), nil, nil
	}
}

// setComplexity makes paginated fields cost their page size times their
// children, so that nesting lists multiplies, and adds perStatement to the
// root fields that each run SQL of their own however many siblings they
// have: conversation (its unread count and the like are prefetched per
// field), user and every mutation. Aliases multiply those fields, and the
// limit then refuses an alias fan-out before it runs rather than at the
// statement budget, with a connection borrowed and a batch of statements
// spent. (user's aliases share a loader today; it is priced anyway, so that
// the price does not depend on how a field happens to be resolved.)
func setComplexity(c *ComplexityRoot, perStatement int) {
	page := func(child int, first *int) int {
		n := 20
		if first != nil && *first > 0 {
			n = *first
		}
		return listOf(n, child)
	}
	c.Query.Conversations = func(child int, first *int, _ *string) int { return page(child, first) }
	c.Conversation.Messages = func(child int, first *int, _ *string) int { return page(child, first) }
	c.Conversation.Participants = func(child int) int { return listOf(listCost, child) }

	statement := func(child int) int { return saturatingAdd(child, perStatement) }
	c.Query.Conversation = func(child int, _ string) int { return statement(child) }
	c.Query.User = func(child int, _ string) int { return statement(child) }
	c.Mutation.SignUp = func(child int, _ model.SignUpInput) int { return statement(child) }
	c.Mutation.SignIn = func(child int, _ model.SignInInput) int { return statement(child) }
	c.Mutation.CreateConversation = func(child int, _ model.CreateConversationInput) int { return statement(child) }
	c.Mutation.AddParticipant = func(child int, _, _ string) int { return statement(child) }
	c.Mutation.SendMessage = func(child int, _ model.SendMessageInput) int { return statement(child) }
	c.Mutation.MarkConversationRead = func(child int, _ string) int { return statement(child) }
	c.Mutation.UpdateProfile = func(child int, _ model.UpdateProfileInput) int { return statement(child) }
}

// statementCost is the price of a root field that runs SQL of its own:
// the complexity limit divided by the statement budget, rounded up, so
// that an operation with more such fields than the budget has statements
// costs more than the limit. 0 without a budget.
func statementCost(limit, maxStatements int) int {
	if maxStatements <= 0 {
		return 0
	}
	return (limit + maxStatements - 1) / maxStatements
}

// saturatingAdd is a + b for non-negative a and b, saturating like listOf.
func saturatingAdd(a, b int) int {
	if a > math.MaxInt-b {
		return math.MaxInt
	}
	return a + b
}

// listOf is the cost of n elements costing child each, saturating instead
// of overflowing: a deep enough query would otherwise wrap around to a
// small number and slip under the limit.
func listOf(n, child int) int {
	if child >= (math.MaxInt-1)/n {
		return math.MaxInt
	}
	return 1 + n*child
}
