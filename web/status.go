package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MaxRequestBytes bounds a request body; larger ones get 413.
const MaxRequestBytes = 1 << 20

// httpStatus carries a status decided during execution (gqlgen itself only
// sets one for request-level errors) to the ResponseWriter, which applies
// it when the response starts.
type httpStatus struct {
	mu          sync.Mutex
	unavailable bool
	retryAfter  string
	// rateLimited: the client is over a limit (429); retryAfter says for
	// how long.
	rateLimited bool
	tooLarge    bool
	// timedOut: the body did not arrive within the server's ReadTimeout.
	timedOut bool
}

type httpStatusKey struct{}

// SetUnavailable marks the response 503 with Retry-After; it is a no-op
// outside HTTP (websocket operations have no status).
func SetUnavailable(ctx context.Context, retryAfter string) {
	if s, ok := ctx.Value(httpStatusKey{}).(*httpStatus); ok {
		s.mu.Lock()
		s.unavailable, s.retryAfter = true, retryAfter
		s.mu.Unlock()
	}
}

// SetRateLimited marks the response 429 with Retry-After, the seconds
// until the client may try again (rounded up, at least 1); it is a no-op
// outside HTTP (websocket operations have no status).
func SetRateLimited(ctx context.Context, retryAfter time.Duration) {
	if s, ok := ctx.Value(httpStatusKey{}).(*httpStatus); ok {
		s.mu.Lock()
		s.rateLimited, s.retryAfter = true, RetryAfterSeconds(retryAfter)
		s.mu.Unlock()
	}
}

// RetryAfterSeconds is d as a Retry-After value: whole seconds, rounded
// up, at least 1.
func RetryAfterSeconds(d time.Duration) string {
	return strconv.FormatInt(max(1, int64((d+time.Second-1)/time.Second)), 10)
}

// msgNoOperation is gqlgen's error for a request without a query (or
// with an empty one).
const msgNoOperation = "no operation provided"

// statusWriter applies the decided status to the first WriteHeader/Write.
// Error responses (4xx) that gqlgen's transports write themselves never
// pass the error presenter, so they are held back and given their codes in
// finish.
type statusWriter struct {
	http.ResponseWriter
	status *httpStatus
	// code is given to the errors of a held response that have none.
	errorCode string
	// contentType is the negotiated JSON type a held response is written
	// in: under application/json a request error is 200, under
	// application/graphql-response+json it keeps its 4xx (GraphQL over
	// HTTP).
	contentType string
	// stream is set for server-sent events: one response that lasts as
	// long as the subscription, so each write gets its own deadline
	// instead of the server's WriteTimeout, which would cut it off.
	stream      bool
	wroteHeader bool
	code        int
	held        *bytes.Buffer // the body of a 4xx response, until finish
}

func (w *statusWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	w.wroteHeader = true
	w.status.mu.Lock()
	switch {
	case w.status.tooLarge:
		code = http.StatusRequestEntityTooLarge
	case w.status.timedOut:
		// The transport answers a body it could not read with 200 and the
		// read error, which names the server's socket addresses.
		code = http.StatusRequestTimeout
	case w.status.rateLimited && code == http.StatusOK:
		// Decided here, not by the transport: the body already has its
		// codes, so it is written as it comes.
		w.Header().Set("Retry-After", w.status.retryAfter)
		w.code = http.StatusTooManyRequests
		w.status.mu.Unlock()
		w.ResponseWriter.WriteHeader(w.code)
		return
	case w.status.unavailable && code == http.StatusOK:
		w.Header().Set("Retry-After", w.status.retryAfter)
		code = http.StatusServiceUnavailable
	}
	w.status.mu.Unlock()
	w.code = code
	if code >= 400 && code < 500 {
		w.held = &bytes.Buffer{}
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.held != nil {
		return w.held.Write(b)
	}
	w.extendDeadline()
	return w.ResponseWriter.Write(b)
}

// extendDeadline gives a stream's next write streamWriteTimeout: a client that
// stops reading is cut off after that long, one that reads is never.
func (w *statusWriter) extendDeadline() {
	if w.stream {
		_ = http.NewResponseController(w.ResponseWriter).SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	}
}

// finish writes a held error response with a code on every error.
func (w *statusWriter) finish() {
	if w.held == nil {
		w.extendDeadline() // for the end of a stream, written after this
		return
	}
	// A request error has no data key at all (the GraphQL spec): the
	// operation never ran.
	var body struct {
		Errors []map[string]any `json:"errors"`
	}
	err := json.Unmarshal(w.held.Bytes(), &body)
	switch {
	case w.code == http.StatusRequestTimeout:
		body.Errors = []map[string]any{{"message": "the request body did not arrive in time"}}
	case err != nil || len(body.Errors) == 0:
		msg := strings.TrimSpace(w.held.String())
		if msg == "" || err == nil {
			msg = http.StatusText(w.code)
		}
		body.Errors = []map[string]any{{"message": msg}}
	}
	if n := len(body.Errors); n > maxRequestErrors {
		// The last one listed stands for the rest, with its code.
		rest := body.Errors[maxRequestErrors-1]
		rest["message"] = fmt.Sprintf("and %d more errors", n-maxRequestErrors+1)
		delete(rest, "locations")
		delete(rest, "path")
		body.Errors = body.Errors[:maxRequestErrors]
	}
	for _, e := range body.Errors {
		if msg, ok := e["message"].(string); ok {
			e["message"] = shortenQuoted(cleanDecodeError(msg))
		}
		ext, _ := e["extensions"].(map[string]any)
		if ext == nil {
			ext = map[string]any{}
			e["extensions"] = ext
		}
		if ext["code"] == nil {
			ext["code"] = w.errorCode
		}
	}
	out, _ := json.Marshal(body)
	code := w.code
	switch {
	case code != http.StatusUnprocessableEntity:
	case len(body.Errors) == 1 && body.Errors[0]["message"] == msgNoOperation:
		// A request without a query is not a well-formed GraphQL request:
		// 400 whatever the type.
		code = http.StatusBadRequest
	case w.contentType != MediaGraphQLResponse:
		// gqlgen's status for a document that does not parse or validate,
		// or variables that do not coerce: a well-formed request that
		// application/json answers with 200.
		code = http.StatusOK
	}
	w.Header().Set("Content-Type", w.contentType)
	w.Header().Del("Content-Length")
	w.ResponseWriter.WriteHeader(code)
	_, _ = w.ResponseWriter.Write(out)
}

// Flush keeps streaming transports (SSE) working through the wrapper.
func (w *statusWriter) Flush() {
	if w.held != nil {
		return
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		w.extendDeadline()
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer (websocket
// upgrades hijack the connection).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// limitedBody records that the body limit was hit, so the response can be
// 413 however the GraphQL transport words its decode error.
type limitedBody struct {
	body   io.ReadCloser
	status *httpStatus
}

func (b limitedBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err == nil || err == io.EOF {
		return n, err
	}
	var tooLarge *http.MaxBytesError
	var netErr net.Error
	switch {
	case errors.As(err, &tooLarge):
		b.status.mu.Lock()
		b.status.tooLarge = true
		b.status.mu.Unlock()
	case errors.As(err, &netErr) && netErr.Timeout():
		b.status.mu.Lock()
		b.status.timedOut = true
		b.status.mu.Unlock()
	}
	return n, err
}

func (b limitedBody) Close() error { return b.body.Close() }

// withHTTPStatus wraps the GraphQL handler with the body limit, the
// content negotiation and the status plumbing; errorCode is given to
// request errors without a code.
func withHTTPStatus(errorCode string, isSubscription IsSubscriptionFunc, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := &httpStatus{}
		accept := Negotiate(r.Header.Get("Accept"))
		sw := &statusWriter{ResponseWriter: w, status: status, errorCode: errorCode, contentType: accept.JSON}
		defer sw.finish()
		if r.ContentLength > MaxRequestBytes {
			sw.WriteHeader(http.StatusRequestEntityTooLarge)
			_, _ = io.WriteString(sw, "request body larger than 1 MiB")
			return
		}
		if r.Body != nil {
			r.Body = limitedBody{body: http.MaxBytesReader(w, r.Body, MaxRequestBytes), status: status}
		}
		r, choice := negotiate(r, accept, isSubscription)
		sw.stream = choice.stream
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), httpStatusKey{}, status)))
	})
}
