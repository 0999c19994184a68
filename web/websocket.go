package web

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
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
	// messages arrive); the reason starts with the error code the GraphQL layer gives it. The client
	// subscribes again and catches up with the messages query.
	CloseTryAgainLater = 1013
)

// streamWriteTimeout bounds one write to a subscriber, websocket or SSE. A
// client that stops reading fills its socket buffers; after this long the
// server gives up on it and closes the connection instead of keeping a
// goroutine blocked forever.
const streamWriteTimeout = 10 * time.Second

// NewWebsocketImplementation returns gqlgen's websocket transport its
// sockets: accepted with coder/websocket (the library gqlgen's own adapter
// uses) under accept's origin and subprotocol rules, registered in
// streams, with bounded writes, and reachable from the operations they
// carry (CloseSocket, CloseSocketAt).
func NewWebsocketImplementation(streams *Streams, accept coderws.AcceptOptions) transport.WebsocketImplementation {
	return socketImplementation{streams: streams, accept: accept}
}

type socketImplementation struct {
	streams *Streams
	accept  coderws.AcceptOptions
}

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
	if slot, ok := r.Context().Value(socketKey{}).(*socketSlot); ok {
		slot.set(c)
	}
	impl.streams.add(c)
	return c, nil
}

// socket is one accepted websocket. The transport reads from one goroutine
// and serializes its writes; WriteClose may come from anywhere (the
// transport, Streams.Shutdown, a subscription that fell behind): the first
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

func (c *socket) end() { _ = c.WriteClose(CloseGoingAway, "server shutting down") }

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
	c.streams.remove(c)
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
