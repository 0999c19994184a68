package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	"chatql/dbpool"
	"chatql/graph"
	"chatql/realtime"
	"chatql/web"
)

// The realtime tests run messageAdded over graphql-transport-ws against a
// server with a running hub, and send messages with the sendMessage
// mutation over HTTP to the same server.

// aliceAndBob starts a server with a listener, and in it Alice, Bob and a
// conversation of theirs: the cast of most of these tests.
func aliceAndBob(t *testing.T) (a *testAPI, alice, aliceToken, bob, bobToken, conv string) {
	t.Helper()
	a = newRealtimeAPI(t)
	alice, aliceToken = a.user("Alice")
	bob, bobToken = a.user("Bob")
	conv = a.conversation("ab", []string{alice, bob})
	return a, alice, aliceToken, bob, bobToken, conv
}

// subscriber signs in to base as the bearer of token and subscribes to
// conv's messages as "1".
func subscriber(t *testing.T, base, token, conv string) *wsClient {
	t.Helper()
	c := connectWS(t, base, token)
	c.subscribeMessages("1", conv)
	return c
}

// annsStream starts a server with a listener (adjusted), and in it Ann, a
// conversation of her own and her subscription to it over server-sent
// events, registered.
func annsStream(t *testing.T, adjust ...func(*apiOptions)) (a *testAPI, token, conv string, sse *sseStream) {
	t.Helper()
	a = newRealtimeAPI(t, adjust...)
	ann, token := a.user("Ann")
	conv = a.conversation("", []string{ann})
	sse = openSSE(t, a.srv.URL, token, messagesRequest(conv))
	a.waitSubscribers(1)
	return a, token, conv, sse
}

// TestRealtimeMessageAdded: a participant receives its conversation's new
// messages in order, never another conversation's, and no connection is
// checked out between events.
func TestRealtimeMessageAdded(t *testing.T) {
	t.Parallel()
	a, alice, aliceToken, _, bobToken, conv := aliceAndBob(t)
	carol, carolToken := a.user("Carol")
	other := a.conversation("ac", []string{alice, carol})
	c := subscriber(t, a.srv.URL, bobToken, conv)
	a.waitSubscribers(1)
	if n := a.pool.Stats().CheckedOut; n != 0 {
		t.Fatalf("subscribed: %d connections checked out, want 0", n)
	}

	for i := range 5 {
		a.sendMessage(carolToken, other, fmt.Sprintf("not for bob %d", i))
		body := fmt.Sprintf("hello %d", i)
		id := a.sendMessage(aliceToken, conv, body)
		ev := c.nextMessage("1")
		if ev.ID != id || ev.Body != body || ev.Author.ID != alice || ev.Conversation.ID != conv {
			t.Fatalf("event %d: %+v, want %s %q by %s in %s", i, ev, id, body, alice, conv)
		}
		if n := a.pool.Stats().CheckedOut; n != 0 {
			t.Fatalf("between events: %d connections checked out, want 0", n)
		}
	}
	// Bob's own messages arrive too, and nothing of the other conversation.
	id := a.sendMessage(bobToken, conv, "mine")
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
	a, _, _, _, _, conv := aliceAndBob(t)
	_, carolToken := a.user("Carol")

	c := connectWS(t, a.srv.URL, carolToken)
	c.subscribeMessages("1", conv)
	if code := c.subscriptionError("1"); code != "NOT_FOUND" {
		t.Fatalf("non-participant: %s, want NOT_FOUND", code)
	}
	c.subscribeMessages("2", "not-an-id")
	if code := c.subscriptionError("2"); code != "BAD_USER_INPUT" {
		t.Fatalf("bad id: %s, want BAD_USER_INPUT", code)
	}
	anon := connectWS(t, a.srv.URL, "")
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
			c, resp, err := dialWS(t, a.srv.URL, wsDial{})
			if err != nil {
				t.Fatalf("dial: %v (response %v)", err, resp)
			}
			c.sendJSON("", "connection_init", map[string]string{"Authorization": auth})
			before, err := c.closed(10 * time.Second)
			if got := websocket.CloseStatus(err); got != graph.CloseForbidden || len(before) > 0 {
				t.Fatalf("closed with %v after messages %+v; close status %d, want %d and no message", err, before, got, graph.CloseForbidden)
			}
		})
	}
}

// TestRealtimeRolledBack: a send that fails stores nothing and announces
// nothing, and a NOTIFY in a rolled-back transaction is never delivered.
func TestRealtimeRolledBack(t *testing.T) {
	t.Parallel()
	a, alice, aliceToken, _, bobToken, conv := aliceAndBob(t)
	c := subscriber(t, a.srv.URL, bobToken, conv)
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
	id := a.sendMessage(aliceToken, conv, "real")
	if ev := c.nextMessage("1"); ev.ID != id {
		t.Fatalf("got %+v, want %s", ev, id)
	}
	c.quiet(200 * time.Millisecond)
}

// TestRealtimeCatchUp: when the listener's backend is terminated, messages
// sent before it is back arrive after the reconnect, in order, once each.
func TestRealtimeCatchUp(t *testing.T) {
	t.Parallel()
	a, _, aliceToken, _, bobToken, conv := aliceAndBob(t)
	c := subscriber(t, a.srv.URL, bobToken, conv)
	a.waitSubscribers(1)

	var want []string
	want = append(want, a.sendMessage(aliceToken, conv, "before"))
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
		want = append(want, a.sendMessage(aliceToken, conv, fmt.Sprintf("gap %d", i)))
	}
	a.waitListening(pid)
	want = append(want, a.sendMessage(aliceToken, conv, "after"))

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

// TestRealtimeCrossReplica: a message sent through replica A reaches a
// subscriber connected to replica B; Postgres NOTIFY is the bus.
func TestRealtimeCrossReplica(t *testing.T) {
	t.Parallel()
	a, _, aliceToken, _, bobToken, conv := aliceAndBob(t)
	replica := a.replica(t, withRealtime)
	c := subscriber(t, replica.srv.URL, bobToken, conv)
	replica.waitSubscribers(1)
	id := a.sendMessage(aliceToken, conv, "across replicas")
	if got := c.nextMessage("1"); got.ID != id || got.Body != "across replicas" {
		t.Fatalf("replica B got %+v, want message %s", got, id)
	}
}

// TestRealtimeSSE: the same subscription over server-sent events.
func TestRealtimeSSE(t *testing.T) {
	t.Parallel()
	a, token, conv, sse := annsStream(t)
	id := a.sendMessage(token, conv, "over SSE")
	if ev := sse.nextMessage(); ev.ID != id || ev.Body != "over SSE" {
		t.Fatalf("event %+v, want message %s", ev, id)
	}
}

// TestRealtimeSSEOutlivesServerTimeouts: an SSE stream is one long
// response, but the server's WriteTimeout and ReadTimeout (which bound
// ordinary requests) must not cut it: each write gets a deadline of its own.
func TestRealtimeSSEOutlivesServerTimeouts(t *testing.T) {
	t.Parallel()
	const writeTimeout = 500 * time.Millisecond
	a, token, conv, sse := annsStream(t, func(o *apiOptions) {
		// IdleTimeout would default to ReadTimeout.
		o.server = func(s *httptest.Server) {
			s.Config.WriteTimeout, s.Config.ReadTimeout, s.Config.IdleTimeout = writeTimeout, writeTimeout, time.Minute
		}
	})
	// The messages go through another server on the same database: the
	// short timeouts are this one's stream's to outlive, and a send that
	// took longer on a loaded machine would be cut by them.
	sender := a.replica(t)
	for i := range 3 {
		// Not synchronisation: the point of the test is that the server's
		// timeouts pass while the stream is open.
		time.Sleep(writeTimeout)
		id := sender.sendMessage(token, conv, fmt.Sprintf("late %d", i))
		if ev := sse.nextMessage(); ev.ID != id {
			t.Fatalf("event %d: %+v, want message %s", i, ev, id)
		}
	}
}

// announceMessage writes a message by author to conv directly and
// announces it, as sendMessage does, returning its id.
func announceMessage(t *testing.T, a *testAPI, conv, author, body string) string {
	t.Helper()
	ctx := context.Background()
	var ev realtime.Event
	if err := a.admin.QueryRow(ctx, "INSERT INTO messages (conversation_id, author_id, body) VALUES ($1, $2, $3) RETURNING id::text, conversation_id::text, created_at",
		conv, author, body).Scan(&ev.ID, &ev.ConversationID, &ev.CreatedAt); err != nil {
		t.Fatal(err)
	}
	if err := realtime.Announce(ctx, dbpool.Conn(a.admin), ev); err != nil {
		t.Fatal(err)
	}
	return ev.ID
}

// dialSmallBuffer opens a graphql-transport-ws socket whose receive buffer
// is tiny, signed in as token: a client that stops reading stalls the
// server's writes after a few kilobytes instead of megabytes.
func dialSmallBuffer(t *testing.T, a *testAPI, token string) *websocket.Conn {
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
	conn, _, err := openWS(ctx, a.srv.URL, wsDial{http: client})
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
	skipInShort(t, "hundreds of large messages until the drop")
	t.Parallel()
	a, alice, aliceToken, _, bobToken, conv := aliceAndBob(t)
	fast := subscriber(t, a.srv.URL, bobToken, conv)
	slow := dialSmallBuffer(t, a, bobToken)
	payload, _ := json.Marshal(messagesRequest(conv))
	if err := wsjson.Write(context.Background(), slow, wsMessage{ID: "1", Type: "subscribe", Payload: payload}); err != nil {
		t.Fatal(err)
	}
	a.waitSubscribers(2)

	// Large messages until the hub gives up on the slow one: it must fall
	// a whole buffer behind first, and the fast one must never. They are
	// written and announced directly, as sendMessage does, but without a
	// round trip through the API each: once the slow socket's writes
	// block, its buffer must fill well before the server's write timeout
	// (10 s) would give up on the socket instead, however loaded the
	// machine.
	body := strings.Repeat("m", 3900)
	sent := 0
	for a.hub.Stats().Dropped == 0 {
		if sent == 2000 {
			t.Fatalf("slow subscriber not dropped after %d messages", sent)
		}
		id := announceMessage(t, a, conv, alice, fmt.Sprintf("%04d %s", sent, body))
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
	id := a.sendMessage(aliceToken, conv, "after the drop")
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
	a, _, aliceToken, _, bobToken, conv := aliceAndBob(t)
	dial := func() *wsClient {
		c, resp, err := dialWS(t, a.srv.URL, wsDial{subprotocol: "graphql-ws"})
		if err != nil {
			t.Fatalf("dial: %v (response %v)", err, resp)
		}
		return c
	}

	// The key in lower case, as graphql-ws clients tend to send it.
	c := dial()
	c.sendJSON("", "connection_init", map[string]string{"authorization": "Bearer " + bobToken})
	c.expect("connection_ack", time.Now().Add(10*time.Second))
	c.sendJSON("7", "start", messagesRequest(conv))
	a.waitSubscribers(1)
	for i := range 3 {
		id := a.sendMessage(aliceToken, conv, fmt.Sprintf("legacy %d", i))
		m := c.next(time.Now().Add(10 * time.Second))
		var ev struct {
			Data struct{ MessageAdded addedEvent }
		}
		if err := json.Unmarshal(m.Payload, &ev); m.Type != "data" || m.ID != "7" || err != nil || ev.Data.MessageAdded.ID != id {
			t.Fatalf("got %s %s %s, want data for %s", m.ID, m.Type, m.Payload, id)
		}
	}
	c.send(wsMessage{ID: "7", Type: "stop"})
	if m := c.next(time.Now().Add(10 * time.Second)); m.Type != "complete" || m.ID != "7" {
		t.Fatalf("got %s %s after stop, want complete", m.ID, m.Type)
	}
	a.waitSubscribers(0)

	// A payload gqlgen cannot decode leaves the socket to us: closed.
	bad := dial()
	bad.send(wsMessage{Type: "connection_init", Payload: json.RawMessage(`"not an object"`)})
	before, err := bad.closed(10 * time.Second)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusProtocolError || len(before) > 0 {
		t.Fatalf("bad connection_init: %v after messages %+v, want close %d and no message", err, before, websocket.StatusProtocolError)
	}
}

// TestRealtimeFanOutOneLoad: a message to a conversation with many
// subscribers here is loaded once for all of them: one borrow for the send
// and one for the announcement, not one per subscriber.
func TestRealtimeFanOutOneLoad(t *testing.T) {
	t.Parallel()
	a, _, aliceToken, _, bobToken, conv := aliceAndBob(t)
	const subscribers = 20
	const query = `subscription Added($c: ID!) { messageAdded(conversationId: $c) { id body author { id displayName } } }`
	clients := make([]*wsClient, subscribers)
	for i := range clients {
		token := aliceToken
		if i%2 == 1 {
			token = bobToken
		}
		clients[i] = connectWS(t, a.srv.URL, token)
		clients[i].sendJSON("1", "subscribe", map[string]any{"query": query, "variables": map[string]any{"c": conv}})
	}
	a.waitSubscribers(subscribers)
	a.waitReleased()

	before := a.pool.Stats().AcquireCount
	id := a.sendMessage(aliceToken, conv, "to everyone")
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
	a, _, _, sse := annsStream(t)
	a.stopHub()
	if err := sse.completes(); err != nil {
		t.Fatal(err)
	}
}

// TestRealtimeTokenExpiry: a socket signed in with a token is closed with
// 4403 when the token expires: a subscription outlives no sign-in.
func TestRealtimeTokenExpiry(t *testing.T) {
	t.Parallel()
	a, _, aliceToken, bob, _, conv := aliceAndBob(t)
	short, err := auth.NewTokens(apiSecret, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	bobToken, expires, err := short.Issue(bob)
	if err != nil {
		t.Fatal(err)
	}
	c := subscriber(t, a.srv.URL, bobToken, conv)
	a.waitSubscribers(1)
	id := a.sendMessage(aliceToken, conv, "before expiry")
	if ev := c.nextMessage("1"); ev.ID != id {
		t.Fatalf("got %+v, want %s", ev, id)
	}
	// The subscription's end and keep-alives may come first; the close
	// comes at the expiry, and not long after it.
	_, err = c.closed(time.Until(expires) + 10*time.Second)
	if at := time.Now(); at.Before(expires) {
		t.Fatalf("closed at %s, before the token expired at %s", at, expires)
	}
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != graph.CloseForbidden || ce.Reason != "access token expired" {
		t.Fatalf("socket ended with %v, want %d", err, graph.CloseForbidden)
	}
	a.waitSubscribers(0)
}

// TestRealtimeRemovedParticipant: every event is checked against the
// conversation's participants at the time it is loaded: a subscriber no
// longer among them (removed in the database) gets NOT_FOUND and its
// subscription ends, while the others still receive the message.
func TestRealtimeRemovedParticipant(t *testing.T) {
	t.Parallel()
	a, _, aliceToken, bob, bobToken, conv := aliceAndBob(t)
	stays := subscriber(t, a.srv.URL, aliceToken, conv)
	leaves := subscriber(t, a.srv.URL, bobToken, conv)
	a.waitSubscribers(2)

	if _, err := a.admin.Exec(context.Background(),
		"DELETE FROM conversation_participants WHERE conversation_id = $1 AND user_id = $2", conv, bob); err != nil {
		t.Fatal(err)
	}
	id := a.sendMessage(aliceToken, conv, "bob has left")
	if ev := stays.nextMessage("1"); ev.ID != id {
		t.Fatalf("remaining participant got %+v, want %s", ev, id)
	}
	if code := leaves.subscriptionError("1"); code != "NOT_FOUND" {
		t.Fatalf("removed participant: %s, want NOT_FOUND", code)
	}
	a.waitSubscribers(1)
}
