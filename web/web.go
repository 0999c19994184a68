// Package web is chatql's HTTP edge for the GraphQL endpoint: who the
// client is (its address, behind trusted proxies), the body limit and the
// status a response gets, CORS and the origin policy, the
// websocket implementation, the GET and POST transports (gqlgen's, with
// a cheaper response writer), and the registry of long-lived streams
// (websockets and SSE) that shutdown ends. It knows GraphQL only as far as
// the transports must: package graph builds the gqlgen handler and wraps it with Wrap; the
// error codes web writes are graph's, passed in Options.
package web

import "net/http"

// Options configure Wrap.
type Options struct {
	// AllowedOrigins are the browser origins of other sites allowed to use
	// the endpoint: CORS for HTTP, the Origin check for websockets (pass
	// the same list to NewWebsocketImplementation). An entry is an origin
	// (https://app.example.com), may use * in its host
	// (https://*.example.com), or is "*" for any origin. Empty means
	// same-origin only. Requests without an Origin header (anything but a
	// browser) are not affected.
	AllowedOrigins []string
	// Streams registers the SSE streams (websockets register when
	// accepted), so that shutdown can end them.
	Streams *Streams
	// ForbiddenCode is the error code of a refused cross-origin websocket.
	ForbiddenCode string
	// RequestErrorCode is given to the errors of a 4xx response that carry
	// no code (the transport's own: a body it cannot decode, say).
	RequestErrorCode string
	// IsSubscription tells the content negotiation whether a request's
	// operation is a subscription (streamed whenever the client accepts
	// text/event-stream); nil treats none as one.
	IsSubscription IsSubscriptionFunc
	// TrustedProxies are the proxies whose X-Forwarded-For or Forwarded
	// header gives ClientAddr; the zero value trusts none.
	TrustedProxies TrustedProxies
	// Admission, when set, wraps the handler inside the client address
	// and the origin policy but before the body limit and the status
	// plumbing: it decides whether a request runs before its body is read,
	// and writes its own refusals.
	Admission func(http.Handler) http.Handler
}

// Wrap puts next, a GraphQL handler, behind the edge: the client's address
// (ClientAddr) first, the origin policy, admission, then the body limit,
// the content negotiation and status plumbing, the SSE registry, and a slot
// that lets a websocket's operations reach their socket.
func Wrap(next http.Handler, opts Options) http.Handler {
	next = withSocketSlot(next)
	next = withSSE(opts.Streams, next)
	next = withHTTPStatus(opts.RequestErrorCode, opts.IsSubscription, next)
	if opts.Admission != nil {
		next = opts.Admission(next)
	}
	next = withCORS(newOriginPolicy(opts.AllowedOrigins), opts.ForbiddenCode, next)
	return withClientAddr(opts.TrustedProxies, next)
}
