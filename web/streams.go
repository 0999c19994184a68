package web

import (
	"context"
	"errors"
	"net/http"
	"sync"
)

// stream is a long-lived connection that Streams.Shutdown ends: a
// websocket or an SSE response.
type stream interface {
	// end asks the stream to finish now; it returns without waiting.
	end()
}

// Streams tracks the long-lived connections of a handler, websockets and
// SSE streams, so that a shutting-down server can end them promptly:
// websockets with CloseGoingAway, SSE streams by completing them. Its zero
// value is not usable: see NewStreams.
type Streams struct {
	mu         sync.Mutex
	open       map[stream]struct{}
	websockets int  // how many of open are websockets; the rest are SSE
	closing    bool // Shutdown began: a stream opened now is ended at once
	wg         sync.WaitGroup
}

// NewStreams returns an empty registry.
func NewStreams() *Streams {
	return &Streams{open: map[stream]struct{}{}}
}

// add registers st until remove, and ends it at once if Shutdown has
// begun.
func (s *Streams) add(st stream) {
	s.mu.Lock()
	s.open[st] = struct{}{}
	if _, ok := st.(*socket); ok {
		s.websockets++
	}
	s.wg.Add(1)
	closing := s.closing
	s.mu.Unlock()
	if closing {
		st.end()
	}
}

func (s *Streams) remove(st stream) {
	s.mu.Lock()
	delete(s.open, st)
	if _, ok := st.(*socket); ok {
		s.websockets--
	}
	s.mu.Unlock()
	s.wg.Done()
}

// Websockets counts the websockets not closed yet.
func (s *Streams) Websockets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.websockets
}

// SSE counts the SSE streams in progress.
func (s *Streams) SSE() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open) - s.websockets
}

// errShuttingDown ends the SSE streams at shutdown.
var errShuttingDown = errors.New("web: server shutting down")

// Shutdown starts the close handshake with CloseGoingAway on every open
// websocket, ends every SSE stream (the client sees it complete), does the
// same to any opened from now on, and waits until all of them are over or
// ctx is done.
func (s *Streams) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	open := make([]stream, 0, len(s.open))
	for st := range s.open {
		open = append(open, st)
	}
	s.mu.Unlock()
	for _, st := range open {
		st.end()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// sseStream is one SSE response in progress.
type sseStream struct {
	cancel context.CancelCauseFunc
}

func (st *sseStream) end() { st.cancel(errShuttingDown) }

// withSSE registers every SSE request (negotiated to text/event-stream) in
// streams for as long as its handler runs, with a context Shutdown cancels.
func withSSE(streams *Streams, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isSSE(r) {
			next.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithCancelCause(r.Context())
		st := &sseStream{cancel: cancel}
		streams.add(st)
		defer streams.remove(st)
		defer cancel(nil)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}
