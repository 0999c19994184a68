package graph

// Admission at the edge and per websocket operation (package admission
// owns the queues). An HTTP request is admitted before its body is read:
// its principal comes from the headers alone, and a refusal costs a token
// check and a short JSON answer, nothing more. A websocket's operations
// are admitted one by one as they start, under the socket's identity.

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"chatql/admission"
	"chatql/auth"
	"chatql/web"
)

// CodeOverloaded: the whole server is at its admission limit and the
// operation would wait longer than ADMISSION_MAX_WAIT (or did). HTTP 503
// with Retry-After, and extensions.retryAfter (seconds).
const CodeOverloaded = "OVERLOADED"

// edgeAdmission is what the edge decided for an HTTP request: its
// principal, its slot, and the identity its token proved, if it did.
type edgeAdmission struct {
	principal string
	ticket    *admission.Ticket
	// authorization is the header the identity was verified from, so that
	// the operation can reuse it instead of verifying again.
	authorization string
	identity      auth.Identity
	verified      bool
}

type edgeAdmissionKey struct{}

func edgeAdmissionFrom(ctx context.Context) (*edgeAdmission, bool) {
	e, ok := ctx.Value(edgeAdmissionKey{}).(*edgeAdmission)
	return e, ok
}

// userPrincipal and addrPrincipal are the two kinds of principal key: a
// user cannot pass for an address or the other way round.
func userPrincipal(userID string) string { return "user:" + userID }

func addrPrincipal(ctx context.Context) string { return "addr:" + web.ClientKey(ctx) }

// edgePrincipal decides an HTTP request's principal from its headers: the
// user of its token when the token verifies at once, else its client
// address. Only a valid token names a user (a forged sub would otherwise
// pick anyone's share). Verification runs on an already cancelled context,
// so that a token whose key is not in the key set yet does not wait for a
// refresh here: it counts as its address, and the operation verifies it
// again, waiting as allowed. A token that verified before names its user
// from memory (edgeTokens); the operation then verifies it itself.
func (h *handlerState) edgePrincipal(r *http.Request) *edgeAdmission {
	header := r.Header.Get("Authorization")
	if raw, ok, err := auth.FromHeader(header); err == nil && ok {
		if userID, ok := h.tokens.lookup(raw, time.Now()); ok {
			return &edgeAdmission{principal: userPrincipal(userID)}
		}
		if id, err := h.opts.Tokens.Verify(h.noWait, raw); err == nil {
			h.tokens.remember(raw, id)
			return &edgeAdmission{principal: userPrincipal(id.UserID), authorization: header, identity: id, verified: true}
		}
	}
	return &edgeAdmission{principal: addrPrincipal(r.Context())}
}

// admitHTTP admits GET and POST operations before anything reads their
// body; websocket upgrades pass (their operations are admitted one by one
// in aroundOperations), and so do other methods (the transports refuse
// them cheaply).
func (h *handlerState) admitHTTP(next http.Handler) http.Handler {
	ctrl := h.opts.Admission
	if ctrl == nil || !ctrl.Config().Enabled() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" || (r.Method != http.MethodGet && r.Method != http.MethodPost) {
			next.ServeHTTP(w, r)
			return
		}
		edge := h.edgePrincipal(r)
		ticket, err := ctrl.Acquire(r.Context(), edge.principal)
		if err != nil {
			var refused *admission.RefusedError
			if errors.As(err, &refused) {
				if !holdRefusal(r.Context(), refused.Hold) {
					return
				}
				writeRefusal(w, r, refused)
			}
			// Otherwise the client went away while it waited.
			return
		}
		defer ticket.Release()
		edge.ticket = ticket
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), edgeAdmissionKey{}, edge)))
	})
}

// holdRefusal waits d before a refusal is written (see
// admission.RefusedError.Hold); false when the client left meanwhile.
func holdRefusal(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// writeRefusal answers a refused request: 429 RATE_LIMITED or 503
// OVERLOADED, Retry-After, and the error in GraphQL's shape, written
// without reading the body. The body is appended by hand, in the bytes
// json.Marshal gives the same error: at ten times the peak the server
// refuses thousands of requests a second, and marshalling a map for each
// was half of what the refusal cost in the handler.
func writeRefusal(w http.ResponseWriter, r *http.Request, refused *admission.RefusedError) {
	code, message := classify(refused)
	retryAfter := web.RetryAfterSeconds(refused.RetryAfter)
	body := make([]byte, 0, 96+len(message))
	body = append(body, `{"errors":[{"extensions":{"code":`...)
	body = appendQuoted(body, code)
	body = append(body, `,"retryAfter":`...)
	body = append(body, retryAfter...)
	body = append(body, `},"message":`...)
	body = appendQuoted(body, message)
	body = append(body, `}]}`...)
	// The type the client negotiated, as for every other error: a
	// subscription's client (text/event-stream) gets JSON too.
	h := w.Header()
	h.Set("Content-Type", web.Negotiate(r.Header.Get("Accept")).JSON)
	h.Set("Retry-After", retryAfter)
	h.Set("Cache-Control", "no-store")
	status := http.StatusTooManyRequests
	if code == CodeOverloaded {
		status = http.StatusServiceUnavailable
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// operationPrincipal is the principal of an operation in gqlgen's
// middleware: the edge's for HTTP, else the websocket's identity, else the
// client address.
func operationPrincipal(ctx context.Context) string {
	if e, ok := edgeAdmissionFrom(ctx); ok {
		return e.principal
	}
	if who, ok := ctx.Value(socketIdentityKey{}).(socketIdentity); ok && who.hasIdentity {
		return userPrincipal(who.identity.UserID)
	}
	return addrPrincipal(ctx)
}

// admitOperation admits an operation as it starts, where the edge did not:
// a websocket's operations. It counts a subscription against the
// principal's cap too, until done is called. For an HTTP subscription
// (SSE), the edge's slot is given back once the subscription has started
// (started), so that a long stream does not hold it.
func (h *handlerState) admitOperation(ctx context.Context, subscription bool) (started, done func(), err error) {
	ctrl := h.opts.Admission
	started, done = func() {}, func() {}
	if ctrl == nil {
		return started, done, nil
	}
	key := operationPrincipal(ctx)
	var ticket *admission.Ticket
	if e, ok := edgeAdmissionFrom(ctx); ok {
		ticket = e.ticket
	} else if ticket, err = ctrl.Acquire(ctx, key); err != nil {
		return nil, nil, err
	}
	if !subscription {
		return started, ticket.Release, nil
	}
	closeSub, err := ctrl.OpenSubscription(key)
	if err != nil {
		ticket.Release()
		return nil, nil, err
	}
	return ticket.Release, func() { ticket.Release(); closeSub() }, nil
}

// refusal is the response of an operation admission refused.
func (h *handlerState) refusal(ctx context.Context, err error) graphql.ResponseHandler {
	if wait, ok := retryAfter(err); ok {
		if errors.Is(err, admission.ErrServerBusy) {
			web.SetUnavailable(ctx, web.RetryAfterSeconds(wait))
		} else {
			web.SetRateLimited(ctx, wait)
		}
	}
	gqlErr := h.present(ctx, err)
	return graphql.OneShot(&graphql.Response{Errors: gqlerror.List{gqlErr}})
}
