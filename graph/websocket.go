package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql/handler/transport"
	coderws "github.com/coder/websocket"
)

// Websocket close codes chatql sends besides the protocols' own. Both are
// RFC 6455 codes that client libraries (graphql-ws among them) treat as
// "reconnect", which is what the client should do.
const (
	// CloseGoingAway ends every socket when the server shuts down: the
	// client reconnects, to another replica or to this one restarted.
	CloseGoingAway = 1001
	// CloseTryAgainLater ends a socket one of whose subscriptions fell too
	// far behind (a client that stopped reading, or reads slower than
	// messages arrive); the reason starts with CodeTooSlow. The client
	// subscribes again and catches up with the messages query.
	CloseTryAgainLater = 1013
)

// streamWriteTimeout bounds one write to a subscriber, websocket or SSE. A
// client that stops reading fills its socket buffers; after this long the
// server gives up on it and closes the connection instead of keeping a
// goroutine blocked forever.
const streamWriteTimeout = 10 * time.Second

// Streams tracks the long-lived connections of a handler, websockets and
// SSE streams, so that a shutting-down server can end them promptly:
// websockets with CloseGoingAway, SSE streams by completing them. Its zero
// value is not usable: see NewStreams.
type Streams struct {
	mu      sync.Mutex
	sockets map[*socket]struct{}
	sse     map[*sseStream]struct{}
	closing bool // Shutdown began: a stream opened now is ended at once
	wg      sync.WaitGroup
}

// NewStreams returns an empty registry.
func NewStreams() *Streams {
	return &Streams{sockets: map[*socket]struct{}{}, sse: map[*sseStream]struct{}{}}
}

// addSocket registers c until removeSocket, and reports whether Shutdown
// has begun (c must then be ended at once).
func (s *Streams) addSocket(c *socket) (closing bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sockets[c] = struct{}{}
	s.wg.Add(1)
	return s.closing
}

func (s *Streams) removeSocket(c *socket) {
	s.mu.Lock()
	delete(s.sockets, c)
	s.mu.Unlock()
	s.wg.Done()
}

// addSSE registers st until removeSSE, and reports whether Shutdown has
// begun (st must then be ended at once).
func (s *Streams) addSSE(st *sseStream) (closing bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sse[st] = struct{}{}
	s.wg.Add(1)
	return s.closing
}

func (s *Streams) removeSSE(st *sseStream) {
	s.mu.Lock()
	delete(s.sse, st)
	s.mu.Unlock()
	s.wg.Done()
}

// Websockets counts the websockets not closed yet.
func (s *Streams) Websockets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sockets)
}

// SSE counts the SSE streams in progress.
func (s *Streams) SSE() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sse)
}

// errShuttingDown ends the SSE streams at shutdown.
var errShuttingDown = errors.New("graph: server shutting down")

// Shutdown starts the close handshake with CloseGoingAway on every open
// websocket, ends every SSE stream (the client sees it complete), does the
// same to any opened from now on, and waits until all of them are over or
// ctx is done.
func (s *Streams) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	open := make([]*socket, 0, len(s.sockets))
	for c := range s.sockets {
		open = append(open, c)
	}
	for st := range s.sse {
		st.cancel(errShuttingDown)
	}
	s.mu.Unlock()
	for _, c := range open {
		_ = c.WriteClose(CloseGoingAway, "server shutting down")
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

// withSSE registers every SSE request (Accept: text/event-stream) in
// streams for as long as its handler runs, with a context Shutdown cancels.
func withSSE(streams *Streams, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isSSE(r) {
			next.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithCancelCause(r.Context())
		st := &sseStream{cancel: cancel}
		if streams.addSSE(st) {
			cancel(errShuttingDown)
		}
		defer streams.removeSSE(st)
		defer cancel(nil)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// isSSE reports whether r asks for server-sent events.
func isSSE(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/event-stream")
}

// socketImplementation accepts websockets with coder/websocket (the
// library gqlgen's own adapter uses) into streams, with a bounded write
// and a handle the resolvers can close the socket through.
type socketImplementation struct {
	streams *Streams
	accept  coderws.AcceptOptions
}

var _ transport.WebsocketImplementation = socketImplementation{}

func (impl socketImplementation) Accept(w http.ResponseWriter, r *http.Request, o transport.WebsocketAcceptOptions) (transport.WebsocketConn, error) {
	for k, vs := range o.ResponseHeader {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	opts := impl.accept
	opts.Subprotocols = slices.Clone(opts.Subprotocols)
	for _, p := range o.Subprotocols {
		if !slices.Contains(opts.Subprotocols, p) {
			opts.Subprotocols = append(opts.Subprotocols, p)
		}
	}
	conn, err := coderws.Accept(w, r, &opts)
	if err != nil {
		return nil, err
	}
	c := &socket{conn: conn, streams: impl.streams}
	closing := impl.streams.addSocket(c)
	if slot, ok := r.Context().Value(socketKey{}).(*socketSlot); ok {
		slot.set(c)
	}
	if closing {
		_ = c.WriteClose(CloseGoingAway, "server shutting down")
	}
	return c, nil
}

// socket is one accepted websocket. The transport reads from one goroutine
// and serializes its writes; WriteClose may come from anywhere (the
// transport, Sockets.Shutdown, a subscription that fell behind): the first
// one decides the close code.
type socket struct {
	conn    *coderws.Conn
	streams *Streams

	mu           sync.Mutex
	closing      bool // a close handshake was started
	finished     bool // removed from streams
	readDeadline *time.Timer
	expiry       *time.Timer // closeAt's
}

var (
	_ transport.WebsocketReadLimiter   = (*socket)(nil)
	_ transport.WebsocketReadDeadliner = (*socket)(nil)
)

func (c *socket) NextReader() (int, io.Reader, error) {
	typ, data, err := c.conn.Read(context.Background())
	if err != nil {
		switch coderws.CloseStatus(err) {
		case coderws.StatusNormalClosure, coderws.StatusGoingAway, coderws.StatusNoStatusRcvd:
			return 0, nil, transport.ErrWebsocketClosed
		}
		return 0, nil, err
	}
	return int(typ), bytes.NewReader(data), nil
}

func (c *socket) WriteJSON(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	// On timeout coder/websocket closes the connection: the reader fails
	// and the transport ends the socket's subscriptions.
	ctx, cancel := context.WithTimeout(context.Background(), streamWriteTimeout)
	defer cancel()
	return c.conn.Write(ctx, coderws.MessageText, data)
}

// WriteClose starts the close handshake in the background (it waits up to
// 5 s for the peer's close frame) and returns; later calls do nothing.
func (c *socket) WriteClose(code int, reason string) error {
	c.mu.Lock()
	c.stopReadDeadlineLocked()
	if c.closing || c.finished {
		c.mu.Unlock()
		return nil
	}
	c.closing = true
	c.mu.Unlock()
	go func() {
		_ = c.conn.Close(coderws.StatusCode(code), reason)
		c.finish()
	}()
	return nil
}

// Close drops the connection unless a close handshake is under way, which
// then owns it.
func (c *socket) Close() error {
	c.mu.Lock()
	c.stopReadDeadlineLocked()
	closing := c.closing
	c.mu.Unlock()
	if closing {
		return nil
	}
	err := c.conn.CloseNow()
	c.finish()
	return err
}

// closeAt starts closing the socket with code and reason at t, unless it
// is closed before.
func (c *socket) closeAt(t time.Time, code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finished {
		return
	}
	if c.expiry != nil {
		c.expiry.Stop()
	}
	c.expiry = time.AfterFunc(time.Until(t), func() { _ = c.WriteClose(code, reason) })
}

func (c *socket) finish() {
	c.mu.Lock()
	if c.finished {
		c.mu.Unlock()
		return
	}
	c.finished = true
	if c.expiry != nil {
		c.expiry.Stop()
	}
	c.mu.Unlock()
	c.streams.removeSocket(c)
}

func (c *socket) Subprotocol() string { return c.conn.Subprotocol() }

func (c *socket) SetReadLimit(n int64) { c.conn.SetReadLimit(n) }

// SetReadDeadline drops the connection at t unless cleared (zero t) or
// moved first: the transport uses it to end a socket that stopped
// answering pings.
func (c *socket) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopReadDeadlineLocked()
	if !t.IsZero() {
		c.readDeadline = time.AfterFunc(time.Until(t), func() { _ = c.conn.CloseNow() })
	}
	return nil
}

func (c *socket) stopReadDeadlineLocked() {
	if c.readDeadline != nil {
		c.readDeadline.Stop()
		c.readDeadline = nil
	}
}

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

// errNoSocket is returned by closeSocket outside a websocket.
var errNoSocket = errors.New("graph: not a websocket operation")

// closeSocket starts closing the websocket ctx's operation runs on.
func closeSocket(ctx context.Context, code int, reason string) error {
	slot, ok := ctx.Value(socketKey{}).(*socketSlot)
	if !ok || slot.get() == nil {
		return errNoSocket
	}
	return slot.get().WriteClose(code, reason)
}
