package graph

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"chatql/auth"
	"chatql/chat"
	"chatql/dbpool"
	"chatql/web"
)

// operation is the request-scoped service of one GraphQL operation: its
// scope on the pool (at most one connection, borrowed on first use), its
// dataloaders, and who is asking. Operation middleware creates it and puts
// it in the context; resolvers reach it with operationFrom. Nothing in it
// outlives the operation.
type operation struct {
	scope   *dbpool.Scope
	loaders *loaders

	// identity is what the Authorization header (or for a websocket, the
	// token wsInit chose) proved, if anything;
	// tokenErr is why it proved nothing. Neither needed the database.
	identity    auth.Identity
	hasIdentity bool
	tokenErr    error

	// loadViewer loads (or provisions) the signed-in user; viewerOnce
	// makes that happen once per operation, on the first resolver's
	// context (so that a leak warning can name that resolver).
	loadViewer func(ctx context.Context) (chat.User, error)
	viewerOnce sync.Once
	viewer     chat.User
	viewerErr  error
}

type operationKey struct{}

func withOperation(ctx context.Context, op *operation) context.Context {
	return context.WithValue(ctx, operationKey{}, op)
}

// operationFrom returns the operation of ctx. Every resolver runs inside
// operation middleware, so its absence is a wiring bug.
func operationFrom(ctx context.Context) *operation {
	op, ok := ctx.Value(operationKey{}).(*operation)
	if !ok {
		panic("graph: no operation in context: resolvers must run under the operation middleware")
	}
	return op
}

// viewerID returns the signed-in user's id without touching the database.
// Use it only after the viewer has been resolved.
func (op *operation) viewerID() string { return op.identity.UserID }

// dbStats is what a response's extensions.db reports about its operation.
type dbStats struct {
	Statements    int     `json:"statements"`
	AcquireWaitMs float64 `json:"acquireWaitMs"`
	HoldMs        float64 `json:"holdMs"`
}

// aroundOperations gives each operation its scope and releases it once the
// response is produced, before it is written to the client, on every path.
//
// gqlgen calls next before any resolver runs and the returned handler when
// it wants the response: resolvers run inside that handler, so the release
// hangs on the handler's return, not on this function's. A context
// cancelled before then (client gone, websocket stop) releases too. A
// subscription's handler is called once per event, until it returns nil:
// see subscriptionEvent.
func (h *handlerState) aroundOperations(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	start := time.Now()
	opCtx := graphql.GetOperationContext(ctx)
	isSubscription := opCtx.Operation != nil && opCtx.Operation.Operation == ast.Subscription
	started, admitted, err := h.admitOperation(ctx, isSubscription)
	if err != nil {
		return h.refusal(ctx, err)
	}
	op := h.newOperation(ctx, opCtx)
	ctx = withOperation(ctx, op)

	var once sync.Once
	release := func() { once.Do(func() { op.scope.Release(); admitted() }) }
	stop := context.AfterFunc(ctx, release)

	responses := next(ctx)
	started()
	return func(ctx context.Context) *graphql.Response {
		if isSubscription {
			return h.subscriptionEvent(ctx, op, responses, func() { stop(); release() })
		}
		defer stop()
		defer release() // also on panic
		resp := responses(ctx)
		release()
		if resp != nil {
			h.annotate(ctx, op, resp)
			if h.opts.OnOperation != nil && opCtx.Operation != nil {
				h.opts.OnOperation(string(opCtx.Operation.Operation), outcome(resp), time.Since(start))
			}
		}
		return resp
	}
}

// subscriptionEvent produces one event of a subscription. The scope lives
// as long as the subscription, but never keeps a connection between events:
// what an event's fields borrowed goes back as soon as the event is produced
// (NextUnit, which also forgets a failed borrow: the next event tries
// again), and every event gets loaders of its own, so it reads fresh data
// and a long subscription accumulates nothing. The end of the stream (nil) or a panic releases the scope for
// good, through end; a subscription stopped between events is released by
// the context's AfterFunc. A subscription resolver's own goroutine must not
// run SQL on the scope: it would hold a connection between events.
func (h *handlerState) subscriptionEvent(ctx context.Context, op *operation, responses graphql.ResponseHandler, end func()) *graphql.Response {
	ended := true // until an event is produced: a panic ends the stream too
	defer func() {
		if ended {
			end()
		} else {
			op.scope.NextUnit()
		}
	}()
	resp := responses(ctx)
	if resp == nil {
		return nil
	}
	ended = false
	// No resolver of this event runs any more: the next one starts afresh.
	op.loaders = newLoaders(op)
	h.annotate(ctx, op, resp)
	return resp
}

// annotate adds the operation's database cost to the response, and marks
// the HTTP response 503 when it failed for want of a connection, 429 when
// it was over a limit.
func (h *handlerState) annotate(ctx context.Context, op *operation, resp *graphql.Response) {
	for _, e := range resp.Errors {
		if code, _ := e.Extensions["code"].(string); code == CodePoolTimeout || code == CodeUnavailable {
			web.SetUnavailable(ctx, h.retryAfter)
			break
		}
	}
	for _, e := range resp.Errors {
		if wait, ok := retryAfter(e.Err); ok {
			web.SetRateLimited(ctx, wait)
			break
		}
	}
	if !h.opts.DBStats {
		return
	}
	st := op.scope.Stats()
	if resp.Extensions == nil {
		resp.Extensions = map[string]any{}
	}
	resp.Extensions["db"] = dbStats{
		Statements:    st.Statements,
		AcquireWaitMs: ms(st.AcquireWait),
		HoldMs:        ms(st.Held),
	}
}

// outcome is "ok" or the code of a response's first error.
func outcome(resp *graphql.Response) string {
	if len(resp.Errors) == 0 {
		return "ok"
	}
	if code, ok := resp.Errors[0].Extensions["code"].(string); ok {
		return code
	}
	return CodeInternal
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (h *handlerState) newOperation(ctx context.Context, opCtx *graphql.OperationContext) *operation {
	op := &operation{scope: h.opts.Pool.NamedScope(operationLabel(opCtx))}
	op.loaders = newLoaders(op)
	// A websocket's operations run as the one identity wsInit decided; an
	// HTTP request's, as its Authorization header says.
	header := opCtx.Headers.Get("Authorization")
	if who, ok := ctx.Value(socketIdentityKey{}).(socketIdentity); ok {
		op.identity, op.hasIdentity = who.identity, who.hasIdentity
	} else if e, ok := edgeAdmissionFrom(ctx); ok && e.verified && e.authorization == header {
		// Verified at the edge, from these very headers.
		op.identity, op.hasIdentity = e.identity, true
	} else if raw, ok, err := auth.FromHeader(header); err != nil {
		op.tokenErr = err
	} else if ok {
		op.identity, op.tokenErr = h.opts.Tokens.Verify(ctx, raw)
		op.hasIdentity = op.tokenErr == nil
	}
	op.loadViewer = func(ctx context.Context) (chat.User, error) { return h.loadViewer(ctx, op) }
	return op
}

// operationLabel names an operation for logs: its type and the name in the
// document ("query Inbox").
func operationLabel(opCtx *graphql.OperationContext) string {
	if opCtx.Operation == nil {
		return "operation"
	}
	name := opCtx.Operation.Name
	if name == "" {
		name = "(anonymous)"
	}
	return string(opCtx.Operation.Operation) + " " + name
}

// BorrowSite describes where in an operation a connection was borrowed:
// the path of the resolver (for leak warnings; see dbpool.WithBorrowSite).
func BorrowSite(ctx context.Context) string {
	if fc := graphql.GetFieldContext(ctx); fc != nil {
		return "resolver " + fc.Path().String()
	}
	return ""
}

// loadViewer checks that the token's user exists, creating it on the first
// request of a Supabase user when auto-provisioning is on.
func (h *handlerState) loadViewer(ctx context.Context, op *operation) (chat.User, error) {
	if op.tokenErr != nil {
		return chat.User{}, op.tokenErr
	}
	if !op.hasIdentity {
		return chat.User{}, errSignInRequired
	}
	id := op.identity
	if id.Anonymous && !h.opts.AllowAnonymous {
		return chat.User{}, errAnonymousRefused
	}
	u, ok, err := chat.UserByID(ctx, op.scope, id.UserID)
	if err != nil {
		return chat.User{}, err
	}
	switch {
	case ok:
	case id.Supabase && h.opts.AutoProvision:
		if u, err = chat.Provision(ctx, op.scope, id); err != nil {
			return chat.User{}, err
		}
		h.opts.Logger.InfoContext(ctx, "provisioned user from Supabase token", "user_id", u.ID)
	default:
		return chat.User{}, errors.Join(auth.ErrUnauthenticated, errors.New("token subject has no user"))
	}
	op.loaders.users.Prime(u.ID, u)
	return u, nil
}

// requireViewer returns the signed-in user or an UNAUTHENTICATED error.
func requireViewer(ctx context.Context) (chat.User, error) {
	op := operationFrom(ctx)
	op.viewerOnce.Do(func() { op.viewer, op.viewerErr = op.loadViewer(ctx) })
	return op.viewer, op.viewerErr
}

// handlerState is what the middleware and the HTTP wrapper share.
type handlerState struct {
	opts       Options
	retryAfter string
	// noWait is an already cancelled context: token verification at the
	// edge never waits on it (edgePrincipal).
	noWait context.Context
	// tokens remembers whose the tokens verified at the edge are.
	tokens edgeTokens
	// present is the error presenter, for responses built here.
	present graphql.ErrorPresenterFunc
}
