package graph

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
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
	tooLarge    bool
}

type httpStatusKey struct{}

// setUnavailable marks the response 503 with Retry-After; it is a no-op
// outside HTTP (websocket operations have no status).
func setUnavailable(ctx context.Context, retryAfter string) {
	if s, ok := ctx.Value(httpStatusKey{}).(*httpStatus); ok {
		s.mu.Lock()
		s.unavailable, s.retryAfter = true, retryAfter
		s.mu.Unlock()
	}
}

// statusWriter applies the decided status to the first WriteHeader/Write.
type statusWriter struct {
	http.ResponseWriter
	status      *httpStatus
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	w.wroteHeader = true
	w.status.mu.Lock()
	defer w.status.mu.Unlock()
	switch {
	case w.status.tooLarge:
		code = http.StatusRequestEntityTooLarge
	case w.status.unavailable && code == http.StatusOK:
		w.Header().Set("Retry-After", w.status.retryAfter)
		code = http.StatusServiceUnavailable
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Flush keeps streaming transports (SSE) working through the wrapper.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
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
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		b.status.mu.Lock()
		b.status.tooLarge = true
		b.status.mu.Unlock()
	}
	return n, err
}

func (b limitedBody) Close() error { return b.body.Close() }

// withHTTPStatus wraps the GraphQL handler with the body limit and the
// status plumbing.
func withHTTPStatus(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > MaxRequestBytes {
			http.Error(w, "request body larger than 1 MiB", http.StatusRequestEntityTooLarge)
			return
		}
		status := &httpStatus{}
		if r.Body != nil {
			r.Body = limitedBody{body: http.MaxBytesReader(w, r.Body, MaxRequestBytes), status: status}
		}
		ctx := context.WithValue(r.Context(), httpStatusKey{}, status)
		next.ServeHTTP(&statusWriter{ResponseWriter: w, status: status}, r.WithContext(ctx))
	})
}
