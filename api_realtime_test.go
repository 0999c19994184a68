package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/golang-jwt/jwt/v5"

	"chatql/auth"
	"chatql/chat"
	"chatql/config"
	"chatql/dbpool"
	"chatql/graph"
	"chatql/metrics"
	"chatql/realtime"
	"chatql/web"
)

// The realtime tests run messageAdded over graphql-transport-ws against a
// server with a running hub, and send messages with the sendMessage
// mutation over HTTP to the same server.

const messageAddedSubscription = `subscription Added($c: ID!) {
  messageAdded(conversationId: $c) { id body author { id } conversation { id } }
}`

const sendMessageMutation = `mutation Send($c: ID!, $b: String!) {
  sendMessage(input: {conversationId: $c, body: $b}) { id }
}`

// realtimeAPI is a testAPI whose server has a running realtime hub.
type realtimeAPI struct {
	*testAPI
	hub *realtime.Hub
	// stopHub stops the hub (and waits for it), as a shutdown does.
	stopHub func()
}

// newRealtimeAPI starts the server; configure may adjust it before it
// starts.
func newRealtimeAPI(t *testing.T, configure ...func(*httptest.Server)) *realtimeAPI {
	t.Helper()
	a := newAPI(t)
	hub, err := realtime.New(realtime.Options{URL: a.dbURL, ApplicationName: a.appName + "-listener", Missed: chat.MessagesSince})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		hub.Run(ctx)
	}()
	stats := true
	srv := httptest.NewUnstartedServer(newHandler(apiConfig{
		pool:    a.pool,
		tokens:  a.tokens,
		logger:  slog.New(slog.DiscardHandler),
		cfg:     config.Config{AutoProvision: true, Introspection: true, DBStats: &stats},
		hub:     hub,
		metrics: metrics.New(),
		streams: web.NewStreams(),
	}))
	for _, f := range configure {
		f(srv)
	}
	srv.Start()
	// newAPI's cleanup closes a.srv (the one with the hub, from now on)
	// and then the pool, after this one has stopped the hub.
	a.srv.Close()
	a.srv = srv
	stop := func() {
		cancel()
		<-done
	}
	t.Cleanup(func() {
		srv.Close()
		stop()
	})
	r := &realtimeAPI{testAPI: a, hub: hub, stopHub: stop}
	r.waitListening(0)
	return r
}

// waitListening waits until the hub listens on a backend other than
// oldPID, returning the new one.
func (r *realtimeAPI) waitListening(oldPID uint32) uint32 {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ch, pid := r.hub.Connected()
		if pid != 0 && pid != oldPID {
			return pid
		}
		select {
		case <-ch:
		case <-time.After(time.Until(deadline)):
			r.t.Fatal("the hub did not (re)connect in time")
		}
	}
}

// waitSubscribers waits until the hub has n subscriptions: a subscription
// is registered asynchronously after the subscribe message.
func (r *realtimeAPI) waitSubscribers(n int) {
	r.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.hub.Subscribers() != n {
		if time.Now().After(deadline) {
			r.t.Fatalf("hub has %d subscribers, want %d", r.hub.Subscribers(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// send posts a message with sendMessage and returns its id.
func (r *realtimeAPI) send(token, conv, body string) string {
	r.t.Helper()
	var out struct{ SendMessage struct{ ID string } }
	r.post(token, sendMessageMutation, map[string]any{"c": conv, "b": body}).into(r.t, &out)
	return out.SendMessage.ID
}

// connectAs opens a websocket signed in with token in connection_init.
func connectAs(t *testing.T, a *realtimeAPI, token string) *wsClient {
	t.Helper()
	c, resp, err := dialWS(t, a.srv, "")
	if err != nil {
		t.Fatalf("dial: %v (response %v)", err, resp)
	}
	payload, _ := json.Marshal(map[string]string{"Authorization": "Bearer " + token})
	c.send(wsMessage{Type: "connection_init", Payload: payload})
	c.expect("connection_ack", time.Now().Add(5*time.Second))
	return c
}

func (c *wsClient) subscribeMessages(id, conv string) {
	c.t.Helper()
	payload, _ := json.Marshal(map[string]any{"query": messageAddedSubscription, "variables": map[string]any{"c": conv}})
	c.send(wsMessage{ID: id, Type: "subscribe", Payload: payload})
}

type addedEvent struct {
	ID, Body     string
	Author       struct{ ID string }
	Conversation struct{ ID string }
}

// nextMessage returns the next messageAdded event of subscription id.
func (c *wsClient) nextMessage(id string) addedEvent {
	c.t.Helper()
	m := c.next(time.Now().Add(10 * time.Second))
	if m.ID != id || m.Type != "next" {
		c.t.Fatalf("got %s %s %s, want next for %s", m.ID, m.Type, m.Payload, id)
	}
	var ev struct {
		Data   struct{ MessageAdded addedEvent }
		Errors []json.RawMessage
	}
	if err := json.Unmarshal(m.Payload, &ev); err != nil || len(ev.Errors) > 0 {
		c.t.Fatalf("event %s: %v", m.Payload, err)
	}
	return ev.Data.MessageAdded
}

// subscriptionError returns the error code a subscription ended with: an
// error message, or a next with errors (then complete).
func (c *wsClient) subscriptionError(id string) string {
	c.t.Helper()
	m := c.next(time.Now().Add(10 * time.Second))
	if m.ID != id {
		c.t.Fatalf("got %s %s %s for another id", m.ID, m.Type, m.Payload)
	}
	type gqlErr struct {
		Extensions struct{ Code string }
	}
	var errs []gqlErr
	switch m.Type {
	case "error":
		if err := json.Unmarshal(m.Payload, &errs); err != nil {
			c.t.Fatalf("error payload %s: %v", m.Payload, err)
		}
	case "next":
		var p struct{ Errors []gqlErr }
		if err := json.Unmarshal(m.Payload, &p); err != nil {
			c.t.Fatalf("next payload %s: %v", m.Payload, err)
		}
		errs = p.Errors
		c.expect("complete", time.Now().Add(5*time.Second))
	default:
		c.t.Fatalf("got %s %s, want an error", m.Type, m.Payload)
	}
	if len(errs) != 1 {
		c.t.Fatalf("want one error, got %s", m.Payload)
	}
	return errs[0].Extensions.Code
}

// TestRealtimeMessageAdded: a participant receives its conversation's new
// messages in order, never another conversation's, and no connection is
// checked out between events.
func TestRealtimeMessageAdded(t *testing.T) {
	t.Parallel()
	a := newRealtimeAPI(t)
	alice, aliceToken := a.user("Alice")
	bob, bobToken := a.user("Bob")
	carol, carolToken := a.user("Carol")
	conv := a.conversation("ab", []string{alice, bob})
	other := a.conversation("ac", []string{alice, carol})

	c := connectAs(t, a, bobToken)
	c.subscribeMessages("1", conv)
	a.waitSubscribers(1)
	if n := a.pool.Stats().CheckedOut; n != 0 {
		t.Fatalf("subscribed: %d connections checked out, want 0", n)
	}

	for i := range 5 {
		a.send(carolToken, other, fmt.Sprintf("not for bob %d", i))
		body := fmt.Sprintf("hello %d", i)
		id := a.send(aliceToken, conv, body)
		ev := c.nextMessage("1")
		if ev.ID != id || ev.Body != body || ev.Author.ID != alice || ev.Conversation.ID != conv {
			t.Fatalf("event %d: %+v, want %s %q by %s in %s", i, ev, id, body, alice, conv)
		}
		if n := a.pool.Stats().CheckedOut; n != 0 {
			t.Fatalf("between events: %d connections checked out, want 0", n)
		}
	}
	// Bob's own messages arrive too, and nothing of the other conversation.
	id := a.send(bobToken, conv, "mine")
	if ev := c.nextMessage("1"); ev.ID != id {
		t.Fatalf("got %+v, want %s", ev, id)
	}
	c.quiet(300 * time.Millisecond)

	c.send(wsMessage{ID: "1", Type: "complete"})
	a.waitSubscribers(0)
	a.waitReleased()
}

// TestRealtimeRefused: a non-participant gets NOT_FOUND, a bad id
// BAD_USER_INPUT, an anonymous socket UNAUTHENTICATED; none subscribes.
func TestRealtimeRefused(t *testing.T) {
	t.Parallel()
	a := newRealtimeAPI(t)
	alice, _ := a.user("Alice")
	bob, _ := a.user("Bob")
	_, carolToken := a.user("Carol")
	conv := a.conversation("ab", []string{alice, bob})

	c := connectAs(t, a, carolToken)
	c.subscribeMessages("1", conv)
	if code := c.subscriptionError("1"); code != "NOT_FOUND" {
		t.Fatalf("non-participant: %s, want NOT_FOUND", code)
	}
	c.subscribeMessages("2", "not-an-id")
	if code := c.subscriptionError("2"); code != "BAD_USER_INPUT" {
		t.Fatalf("bad id: %s, want BAD_USER_INPUT", code)
	}
	anon := connect(t, a.srv)
	anon.subscribeMessages("3", conv)
	if code := anon.subscriptionError("3"); code != "UNAUTHENTICATED" {
		t.Fatalf("anonymous: %s, want UNAUTHENTICATED", code)
	}
	if n := a.hub.Subscribers(); n != 0 {
		t.Fatalf("%d subscribers, want 0", n)
	}
	a.waitReleased()
}

// TestRealtimeBadToken: a bad token in connection_init closes the socket
// with 4403 before any operation.
func TestRealtimeBadToken(t *testing.T) {
	t.Parallel()
	a := newRealtimeAPI(t)
	ann, _ := a.user("Ann")
	valid := chatqlClaims(ann)
	now := time.Now()
	for name, auth := range map[string]string{
		"garbage":      "Bearer not-a-token",
		"no bearer":    "Basic abc",
		"expired":      "Bearer " + signed(t, jwt.SigningMethodHS256, apiSecret, withValues(valid, "iat", now.Add(-2*time.Hour).Unix(), "exp", now.Add(-time.Hour).Unix())),
		"wrong secret": "Bearer " + signed(t, jwt.SigningMethodHS256, []byte("another-secret-0123456789abcdef-0123456789"), valid),
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, _, err := websocket.Dial(ctx, wsURL(a.srv), &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.CloseNow()
			if err := wsjson.Write(ctx, conn, map[string]any{"type": "connection_init", "payload": map[string]string{"Authorization": auth}}); err != nil {
				t.Fatal(err)
			}
			var m wsMessage
			err = wsjson.Read(ctx, conn, &m)
			if got := websocket.CloseStatus(err); got != 4403 {
				t.Fatalf("read: %v (message %+v), close status %d, want 4403", err, m, got)
			}
		})
	}
}

// TestRealtimeRolledBack: a send that fails stores nothing and announces
// nothing, and a NOTIFY in a rolled-back transaction is never delivered.
func TestRealtimeRolledBack(t *testing.T) {
	t.Parallel()
	a := newRealtimeAPI(t)
	alice, aliceToken := a.user("Alice")
	bob, bobToken := a.user("Bob")
	conv := a.conversation("ab", []string{alice, bob})
	c := connectAs(t, a, bobToken)
	c.subscribeMessages("1", conv)
	a.waitSubscribers(1)

	resp := a.post(aliceToken, sendMessageMutation, map[string]any{"c": conv, "b": strings.Repeat("x", 4001)})
	if code := resp.code(t); code != "BAD_USER_INPUT" {
		t.Fatalf("long body: %s", code)
	}
	// A transaction that inserts and announces a message, then rolls back.
	ctx := context.Background()
	tx, err := a.admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ghost realtime.Event
	if err := tx.QueryRow(ctx, "INSERT INTO messages (conversation_id, author_id, body) VALUES ($1, $2, 'ghost') RETURNING id::text, conversation_id::text, created_at",
		conv, alice).Scan(&ghost.ID, &ghost.ConversationID, &ghost.CreatedAt); err != nil {
		t.Fatal(err)
	}
	if err := realtime.Announce(ctx, dbpool.Conn(tx.Conn()), ghost); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n := a.count("SELECT count(*)::int FROM messages WHERE conversation_id = $1", conv); n != 0 {
		t.Fatalf("%d messages stored, want 0", n)
	}
	// The next event is the next committed message.
	id := a.send(aliceToken, conv, "real")
	if ev := c.nextMessage("1"); ev.ID != id {
		t.Fatalf("got %+v, want %s", ev, id)
	}
	c.quiet(200 * time.Millisecond)
}

// TestRealtimeCatchUp: when the listener's backend is terminated, messages
// sent before it is back arrive after the reconnect, in order, once each.
func TestRealtimeCatchUp(t *testing.T) {
	t.Parallel()
	a := newRealtimeAPI(t)
	alice, aliceToken := a.user("Alice")
	bob, bobToken := a.user("Bob")
	conv := a.conversation("ab", []string{alice, bob})
	c := connectAs(t, a, bobToken)
	c.subscribeMessages("1", conv)
	a.waitSubscribers(1)

	var want []string
	want = append(want, a.send(aliceToken, conv, "before"))
	if ev := c.nextMessage("1"); ev.ID != want[0] {
		t.Fatalf("got %+v, want %s", ev, want[0])
	}
	want = want[:0]

	_, pid := a.hub.Connected()
	var ok bool
	if err := a.admin.QueryRow(context.Background(), "SELECT pg_terminate_backend($1)", int32(pid)).Scan(&ok); err != nil || !ok {
		t.Fatalf("terminate listener %d: %v %v", pid, ok, err)
	}
	for i := range 3 {
		want = append(want, a.send(aliceToken, conv, fmt.Sprintf("gap %d", i)))
	}
	a.waitListening(pid)
	want = append(want, a.send(aliceToken, conv, "after"))

	for i, id := range want {
		if ev := c.nextMessage("1"); ev.ID != id {
			t.Fatalf("event %d: got %+v, want %s", i, ev, id)
		}
	}
	c.quiet(300 * time.Millisecond)
	if n := a.pool.Stats().CheckedOut; n != 0 {
		t.Fatalf("%d connections checked out, want 0", n)
	}
}

// addReplica starts a second server on the same database with a hub and a
// pool of its own, as a second process would have.
func (r *realtimeAPI) addReplica(t *testing.T) (*httptest.Server, *realtime.Hub) {
	t.Helper()
	cfg := dbpool.DefaultConfig()
	cfg.ApplicationName = r.appName + "-b"
	pool, err := dbpool.New(r.dbURL, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	hub, err := realtime.New(realtime.Options{URL: r.dbURL, ApplicationName: cfg.ApplicationName + "-listener", Missed: chat.MessagesSince})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		hub.Run(ctx)
	}()
	srv := httptest.NewServer(newHandler(apiConfig{
		pool: pool, tokens: r.tokens, logger: slog.New(slog.DiscardHandler),
		cfg: config.Config{AutoProvision: true, Introspection: true}, hub: hub,
		metrics: metrics.New(), streams: web.NewStreams(),
	}))
	t.Cleanup(func() {
		srv.Close()
		cancel()
		<-done
		pool.Close()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, pid := hub.Connected(); pid != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("replica hub did not connect")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return srv, hub
}

// TestRealtimeCrossReplica: a message sent through replica A reaches a
// subscriber connected to replica B; Postgres NOTIFY is the bus.
func TestRealtimeCrossReplica(t *testing.T) {
	t.Parallel()
	a := newRealtimeAPI(t)
	ann, annToken := a.user("Ann")
	bob, bobToken := a.user("Bob")
	conv := a.conversation("", []string{ann, bob})
	replica, replicaHub := a.addReplica(t)

	primary := a.srv
	a.srv = replica // connectAs dials a.srv
	c := connectAs(t, a, bobToken)
	a.srv = primary
	c.subscribeMessages("1", conv)
	deadline := time.Now().Add(5 * time.Second)
	for replicaHub.Subscribers() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("subscription not registered on the replica")
		}
		time.Sleep(5 * time.Millisecond)
	}
	id := a.send(annToken, conv, "across replicas")
	if got := c.nextMessage("1"); got.ID != id || got.Body != "across replicas" {
		t.Fatalf("replica B got %+v, want message %s", got, id)
	}
}

// openSSE subscribes to conv's messages over server-sent events.
func openSSE(t *testing.T, a *realtimeAPI, token, conv string) *bufio.Scanner {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": messageAddedSubscription, "variables": map[string]any{"c": conv}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, a.srv.URL+"/query", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("content type %q", ct)
	}
	return bufio.NewScanner(resp.Body)
}

// nextSSE returns the next messageAdded event of an SSE stream.
func nextSSE(t *testing.T, sc *bufio.Scanner) addedEvent {
	t.Helper()
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			var ev struct {
				Data   struct{ MessageAdded addedEvent }
				Errors []json.RawMessage
			}
			if err := json.Unmarshal([]byte(data), &ev); err != nil || len(ev.Errors) > 0 {
				t.Fatalf("event %q: %v", data, err)
			}
			return ev.Data.MessageAdded
		}
	}
	t.Fatalf("stream ended without an event: %v", sc.Err())
	return addedEvent{}
}

// TestRealtimeSSE: the same subscription over server-sent events.
func TestRealtimeSSE(t *testing.T) {
	t.Parallel()
	a := newRealtimeAPI(t)
	ann, token := a.user("Ann")
	conv := a.conversation("", []string{ann})
	sc := openSSE(t, a, token, conv)
	a.waitSubscribers(1)
	id := a.send(token, conv, "over SSE")
	if ev := nextSSE(t, sc); ev.ID != id || ev.Body != "over SSE" {
		t.Fatalf("event %+v, want message %s", ev, id)
	}
}

// TestRealtimeSSEOutlivesServerTimeouts: an SSE stream is one long
// response, but the server's WriteTimeout and ReadTimeout (which bound
// ordinary requests) must not cut it: each write gets a deadline of its own.
func TestRealtimeSSEOutlivesServerTimeouts(t *testing.T) {
	t.Parallel()
	const writeTimeout = 500 * time.Millisecond
	// IdleTimeout would default to ReadTimeout: the sends below reuse a
	// connection idle for as long, and would race its closing.
	a := newRealtimeAPI(t, func(s *httptest.Server) {
		s.Config.WriteTimeout, s.Config.ReadTimeout, s.Config.IdleTimeout = writeTimeout, writeTimeout, time.Minute
	})
	ann, token := a.user("Ann")
	conv := a.conversation("", []string{ann})
	sc := openSSE(t, a, token, conv)
	a.waitSubscribers(1)
	for i := range 3 {
		time.Sleep(writeTimeout) // the point of the test: time passing
		id := a.send(token, conv, fmt.Sprintf("late %d", i))
		if ev := nextSSE(t, sc); ev.ID != id {
			t.Fatalf("event %d: %+v, want message %s", i, ev, id)
		}
	}
}

// dialSmallBuffer opens a graphql-transport-ws socket whose receive buffer
// is tiny, signed in as token: a client that stops reading stalls the
// server's writes after a few kilobytes instead of megabytes.
func dialSmallBuffer(t *testing.T, a *realtimeAPI, token string) *websocket.Conn {
	t.Helper()
	dialer := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		cerr := c.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return errors.Join(cerr, err)
	}}
	client := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, wsURL(a.srv), &websocket.DialOptions{
		Subprotocols: []string{"graphql-transport-ws"}, HTTPClient: client,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	payload, _ := json.Marshal(map[string]string{"Authorization": "Bearer " + token})
	if err := wsjson.Write(ctx, conn, wsMessage{Type: "connection_init", Payload: payload}); err != nil {
		t.Fatal(err)
	}
	var ack wsMessage
	if err := wsjson.Read(ctx, conn, &ack); err != nil || ack.Type != "connection_ack" {
		t.Fatalf("ack: %+v %v", ack, err)
	}
	return conn
}

// TestRealtimeSlowConsumer: a subscriber that stops reading is dropped
// once its buffer is full, and its socket is closed with 1013 and a reason
// naming SUBSCRIPTION_TOO_SLOW, while another subscriber to the same
// conversation receives every message in order.
func TestRealtimeSlowConsumer(t *testing.T) {
	t.Parallel()
	a := newRealtimeAPI(t)
	alice, aliceToken := a.user("Alice")
	bob, bobToken := a.user("Bob")
	conv := a.conversation("ab", []string{alice, bob})

	fast := connectAs(t, a, bobToken)
	fast.subscribeMessages("1", conv)
	slow := dialSmallBuffer(t, a, bobToken)
	payload, _ := json.Marshal(map[string]any{"query": messageAddedSubscription, "variables": map[string]any{"c": conv}})
	if err := wsjson.Write(context.Background(), slow, wsMessage{ID: "1", Type: "subscribe", Payload: payload}); err != nil {
		t.Fatal(err)
	}
	a.waitSubscribers(2)

	// Large messages until the hub gives up on the slow one: it must fall
	// a whole buffer behind first, and the fast one must never.
	body := strings.Repeat("m", 3900)
	sent := 0
	for a.hub.Stats().Dropped == 0 {
		if sent == 2000 {
			t.Fatalf("slow subscriber not dropped after %d messages", sent)
		}
		id := a.send(aliceToken, conv, fmt.Sprintf("%04d %s", sent, body))
		if ev := fast.nextMessage("1"); ev.ID != id {
			t.Fatalf("fast subscriber got %s, want %s", ev.ID, id)
		}
		sent++
	}
	if sent < realtime.BufferSize {
		t.Fatalf("dropped after %d messages, before its buffer of %d could fill", sent, realtime.BufferSize)
	}
	if n := a.hub.Subscribers(); n != 1 {
		t.Fatalf("%d subscribers after the drop, want the fast one", n)
	}
	// The fast one goes on.
	id := a.send(aliceToken, conv, "after the drop")
	if ev := fast.nextMessage("1"); ev.ID != id {
		t.Fatalf("fast subscriber got %s after the drop, want %s", ev.ID, id)
	}

	// The slow client reads again: what was in flight, then the close.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	received := 0
	for {
		var m wsMessage
		err := wsjson.Read(ctx, slow, &m)
		if err == nil {
			if m.Type == "next" {
				received++
			}
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != web.CloseTryAgainLater || !strings.HasPrefix(ce.Reason, graph.CodeTooSlow+":") {
			t.Fatalf("slow socket ended with %v, want close %d %s", err, web.CloseTryAgainLater, graph.CodeTooSlow)
		}
		break
	}
	if received >= sent {
		t.Fatalf("slow client received %d of %d messages: it was not behind", received, sent)
	}
	t.Logf("dropped after %d messages; the slow client had received %d", sent, received)
	a.waitReleased()
}

// TestRealtimeLegacyProtocol: messageAdded over the older graphql-ws
// protocol (start/data/stop), signed in through connection_init, and a
// socket whose connection_init payload is not an object is closed.
func TestRealtimeLegacyProtocol(t *testing.T) {
	t.Parallel()
	a := newRealtimeAPI(t)
	alice, aliceToken := a.user("Alice")
	bob, bobToken := a.user("Bob")
	conv := a.conversation("ab", []string{alice, bob})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dial := func() *websocket.Conn {
		conn, _, err := websocket.Dial(ctx, wsURL(a.srv), &websocket.DialOptions{Subprotocols: []string{"graphql-ws"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.CloseNow() })
		if p := conn.Subprotocol(); p != "graphql-ws" {
			t.Fatalf("negotiated %q", p)
		}
		return conn
	}
	// next skips keep-alives ("ka").
	next := func(conn *websocket.Conn) wsMessage {
		for {
			var m wsMessage
			if err := wsjson.Read(ctx, conn, &m); err != nil {
				t.Fatalf("read: %v", err)
			}
			if m.Type != "ka" {
				return m
			}
		}
	}
	write := func(conn *websocket.Conn, m wsMessage) {
		if err := wsjson.Write(ctx, conn, m); err != nil {
			t.Fatal(err)
		}
	}

	conn := dial()
	init, _ := json.Marshal(map[string]string{"authorization": "Bearer " + bobToken})
	write(conn, wsMessage{Type: "connection_init", Payload: init})
	if m := next(conn); m.Type != "connection_ack" {
		t.Fatalf("got %s %s, want connection_ack", m.Type, m.Payload)
	}
	payload, _ := json.Marshal(map[string]any{"query": messageAddedSubscription, "variables": map[string]any{"c": conv}})
	write(conn, wsMessage{ID: "7", Type: "start", Payload: payload})
	a.waitSubscribers(1)
	for i := range 3 {
		id := a.send(aliceToken, conv, fmt.Sprintf("legacy %d", i))
		m := next(conn)
		var ev struct {
			Data struct{ MessageAdded addedEvent }
		}
		if err := json.Unmarshal(m.Payload, &ev); m.Type != "data" || m.ID != "7" || err != nil || ev.Data.MessageAdded.ID != id {
			t.Fatalf("got %s %s %s, want data for %s", m.ID, m.Type, m.Payload, id)
		}
	}
	write(conn, wsMessage{ID: "7", Type: "stop"})
	if m := next(conn); m.Type != "complete" || m.ID != "7" {
		t.Fatalf("got %s %s after stop, want complete", m.ID, m.Type)
	}
	a.waitSubscribers(0)

	// A payload gqlgen cannot decode leaves the socket to us: closed.
	bad := dial()
	write(bad, wsMessage{Type: "connection_init", Payload: json.RawMessage(`"not an object"`)})
	var m wsMessage
	err := wsjson.Read(ctx, bad, &m)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusProtocolError {
		t.Fatalf("bad connection_init: %v (%+v), want close %d", err, m, websocket.StatusProtocolError)
	}
}

// TestRealtimeFanOutOneLoad: a message to a conversation with many
// subscribers here is loaded once for all of them: one borrow for the send
// and one for the announcement, not one per subscriber.
func TestRealtimeFanOutOneLoad(t *testing.T) {
	t.Parallel()
	a := newRealtimeAPI(t)
	alice, aliceToken := a.user("Alice")
	bob, bobToken := a.user("Bob")
	conv := a.conversation("ab", []string{alice, bob})
	const subscribers = 20
	const query = `subscription Added($c: ID!) { messageAdded(conversationId: $c) { id body author { id displayName } } }`
	clients := make([]*wsClient, subscribers)
	for i := range clients {
		token := aliceToken
		if i%2 == 1 {
			token = bobToken
		}
		clients[i] = connectAs(t, a, token)
		payload, _ := json.Marshal(map[string]any{"query": query, "variables": map[string]any{"c": conv}})
		clients[i].send(wsMessage{ID: "1", Type: "subscribe", Payload: payload})
	}
	a.waitSubscribers(subscribers)
	a.waitReleased()

	before := a.pool.Stats().AcquireCount
	id := a.send(aliceToken, conv, "to everyone")
	for i, c := range clients {
		m := c.next(time.Now().Add(10 * time.Second))
		if m.Type != "next" || !strings.Contains(string(m.Payload), id) {
			t.Fatalf("subscriber %d got %s %s, want message %s", i, m.Type, m.Payload, id)
		}
	}
	if n := a.pool.Stats().AcquireCount - before; n != 2 {
		t.Fatalf("%d borrows for one message to %d subscribers, want 2 (the send, the announcement)", n, subscribers)
	}
}

// TestRealtimeSSEHubStops: when the hub stops under an SSE stream (the
// server shutting down), the stream completes; the websocket transport's
// subscription errors do not exist on SSE and must not be reached for.
func TestRealtimeSSEHubStops(t *testing.T) {
	t.Parallel()
	a := newRealtimeAPI(t)
	ann, token := a.user("Ann")
	conv := a.conversation("", []string{ann})
	sc := openSSE(t, a, token, conv)
	a.waitSubscribers(1)
	a.stopHub()
	for sc.Scan() {
		if sc.Text() == "event: complete" {
			return
		}
	}
	t.Fatalf("stream ended without completing: %v", sc.Err())
}

// TestRealtimeTokenExpiry: a socket signed in with a token is closed with
// 4403 when the token expires: a subscription outlives no sign-in.
func TestRealtimeTokenExpiry(t *testing.T) {
	t.Parallel()
	a := newRealtimeAPI(t)
	alice, aliceToken := a.user("Alice")
	bob, _ := a.user("Bob")
	conv := a.conversation("ab", []string{alice, bob})
	short, err := auth.NewTokens(apiSecret, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	bobToken, expires, err := short.Issue(bob)
	if err != nil {
		t.Fatal(err)
	}
	c := connectAs(t, a, bobToken)
	c.subscribeMessages("1", conv)
	a.waitSubscribers(1)
	id := a.send(aliceToken, conv, "before expiry")
	if ev := c.nextMessage("1"); ev.ID != id {
		t.Fatalf("got %+v, want %s", ev, id)
	}
	deadline := expires.Add(3 * time.Second)
	for {
		select {
		case _, ok := <-c.msgs:
			if ok {
				continue // the subscription's end, keep-alives
			}
		case <-time.After(time.Until(deadline)):
			t.Fatal("socket still open 3 s after its token expired")
		}
		break
	}
	if at := time.Now(); at.Before(expires) {
		t.Fatalf("closed at %s, before the token expired at %s", at, expires)
	}
	var ce websocket.CloseError
	if !errors.As(c.err, &ce) || ce.Code != graph.CloseForbidden || ce.Reason != "access token expired" {
		t.Fatalf("socket ended with %v, want %d", c.err, graph.CloseForbidden)
	}
	a.waitSubscribers(0)
}

// TestRealtimeRemovedParticipant: every event is checked against the
// conversation's participants at the time it is loaded: a subscriber no
// longer among them (removed in the database) gets NOT_FOUND and its
// subscription ends, while the others still receive the message.
func TestRealtimeRemovedParticipant(t *testing.T) {
	t.Parallel()
	a := newRealtimeAPI(t)
	alice, aliceToken := a.user("Alice")
	bob, bobToken := a.user("Bob")
	conv := a.conversation("ab", []string{alice, bob})
	stays := connectAs(t, a, aliceToken)
	stays.subscribeMessages("1", conv)
	leaves := connectAs(t, a, bobToken)
	leaves.subscribeMessages("1", conv)
	a.waitSubscribers(2)

	if _, err := a.admin.Exec(context.Background(),
		"DELETE FROM conversation_participants WHERE conversation_id = $1 AND user_id = $2", conv, bob); err != nil {
		t.Fatal(err)
	}
	id := a.send(aliceToken, conv, "bob has left")
	if ev := stays.nextMessage("1"); ev.ID != id {
		t.Fatalf("remaining participant got %+v, want %s", ev, id)
	}
	if code := leaves.subscriptionError("1"); code != "NOT_FOUND" {
		t.Fatalf("removed participant: %s, want NOT_FOUND", code)
	}
	a.waitSubscribers(1)
}
