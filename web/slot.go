package web

// How an operation reaches the websocket it runs on: every upgrade request
// gets a slot in its context, which Accept fills with the socket; gqlgen's
// operations inherit that context.

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql/handler/transport"
)

// socketKey carries a *socketSlot in a websocket request's context: the
// transport's operations inherit that context, so a subscription can close
// its own socket.
type socketKey struct{}

type socketSlot struct {
	mu sync.Mutex
	c  *socket
}

func (s *socketSlot) set(c *socket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.c = c
}

func (s *socketSlot) get() *socket {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c
}

// withSocketSlot gives every websocket request a slot for its socket, and
// closes a socket the transport left open when it returned (it does so
// after a connection_init payload it cannot decode).
func withSocketSlot(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "" {
			next.ServeHTTP(w, r)
			return
		}
		slot := &socketSlot{}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), socketKey{}, slot)))
		if c := slot.get(); c != nil {
			// Normally already closing: then this does nothing.
			_ = c.WriteClose(transport.WebsocketCloseProtocolError, "invalid connection_init payload")
		}
	})
}

// errNoSocket is returned outside a websocket.
var errNoSocket = errors.New("web: not a websocket operation")

// OnWebsocket reports whether ctx belongs to a request that came as a
// websocket upgrade (its operations inherit that context).
func OnWebsocket(ctx context.Context) bool {
	_, ok := ctx.Value(socketKey{}).(*socketSlot)
	return ok
}

// CloseSocket starts closing the websocket that ctx's operation runs on.
func CloseSocket(ctx context.Context, code int, reason string) error {
	c := socketFrom(ctx)
	if c == nil {
		return errNoSocket
	}
	return c.WriteClose(code, reason)
}

// CloseSocketAt starts closing the websocket that ctx's operation runs on
// at t, unless it closes before; a later call moves the time.
func CloseSocketAt(ctx context.Context, t time.Time, code int, reason string) error {
	c := socketFrom(ctx)
	if c == nil {
		return errNoSocket
	}
	c.closeAt(t, code, reason)
	return nil
}

func socketFrom(ctx context.Context) *socket {
	slot, ok := ctx.Value(socketKey{}).(*socketSlot)
	if !ok {
		return nil
	}
	return slot.get()
}
