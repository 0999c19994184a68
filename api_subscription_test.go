package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"chatql/config"
	"chatql/graph"
	"chatql/metrics"
	"chatql/web"
)

// The subscription tests speak graphql-transport-ws (the graphql-ws
// library's protocol) to the handler newHandler builds, over a real socket.

const poolStatusSubscription = `subscription PoolStatus($ms: Int) {
  poolStatus(intervalMs: $ms) { status checkedOut total acquireCount }
}`

// wsMessage is one graphql-transport-ws message; at is when it arrived.
type wsMessage struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
	at      time.Time
}

// wsClient is a graphql-transport-ws client. One goroutine reads the
// socket into msgs (answering the server's pings), so that waiting for a
// message can have a deadline without closing the socket, as a cancelled
// Read would.
type wsClient struct {
	t    testing.TB
	conn *websocket.Conn
	msgs chan wsMessage // closed when the socket is
	done chan struct{}  // closed by close, to stop the reader
	err  error          // why the reader stopped; read it after msgs is closed
}

// wsURL is srv's GraphQL endpoint as a websocket URL.
func wsURL(srv *httptest.Server) string {
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/query"
}

// dialWS opens a websocket to srv with the given Origin ("" sends none),
// returning the handshake response when the server refuses.
func dialWS(t testing.TB, srv *httptest.Server, origin string) (*wsClient, *http.Response, error) {
	t.Helper()
	header := http.Header{}
	if origin != "" {
		header.Set("Origin", origin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, wsURL(srv), &websocket.DialOptions{
		Subprotocols: []string{"graphql-transport-ws"},
		HTTPHeader:   header,
	})
	if err != nil {
		return nil, resp, err
	}
	if p := conn.Subprotocol(); p != "graphql-transport-ws" {
		conn.CloseNow()
		t.Fatalf("negotiated subprotocol %q", p)
	}
	c := &wsClient{t: t, conn: conn, msgs: make(chan wsMessage, 64), done: make(chan struct{})}
	go c.read()
	t.Cleanup(c.close)
	return c, resp, nil
}

// connect dials srv and completes connection_init / connection_ack.
func connect(t testing.TB, srv *httptest.Server) *wsClient {
	t.Helper()
	c, resp, err := dialWS(t, srv, "")
	if err != nil {
		t.Fatalf("dial: %v (response %v)", err, resp)
	}
	c.init()
	return c
}

func (c *wsClient) read() {
	defer close(c.msgs)
	for {
		var m wsMessage
		if err := wsjson.Read(context.Background(), c.conn, &m); err != nil {
			c.err = err
			return
		}
		m.at = time.Now()
		if m.Type == "ping" {
			_ = wsjson.Write(context.Background(), c.conn, wsMessage{Type: "pong"})
			continue
		}
		select {
		case c.msgs <- m:
		case <-c.done:
			return
		}
	}
}

func (c *wsClient) close() {
	select {
	case <-c.done:
		return
	default:
	}
	close(c.done)
	c.conn.CloseNow()
	for range c.msgs { // wait for the reader
	}
}

func (c *wsClient) send(m wsMessage) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := wsjson.Write(ctx, c.conn, m); err != nil {
		c.t.Fatalf("send %s: %v", m.Type, err)
	}
}

// next returns the next message, failing the test at the deadline.
func (c *wsClient) next(deadline time.Time) wsMessage {
	c.t.Helper()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case m, ok := <-c.msgs:
		if !ok {
			c.t.Fatal("websocket closed by the server")
		}
		return m
	case <-timer.C:
		c.t.Fatal("no message before the deadline")
	}
	panic("unreachable")
}

// expect returns the next message, which must be of type typ.
func (c *wsClient) expect(typ string, deadline time.Time) wsMessage {
	c.t.Helper()
	m := c.next(deadline)
	if m.Type != typ {
		c.t.Fatalf("got %s %s, want %s", m.Type, m.Payload, typ)
	}
	return m
}

func (c *wsClient) init() {
	c.t.Helper()
	c.send(wsMessage{Type: "connection_init", Payload: json.RawMessage(`{}`)})
	c.expect("connection_ack", time.Now().Add(5*time.Second))
}

// roundTrip sends a ping and waits for the pong: once it arrives the
// server's connection loop is running, with all of its goroutines.
func (c *wsClient) roundTrip() {
	c.t.Helper()
	c.send(wsMessage{Type: "ping"})
	c.expect("pong", time.Now().Add(5*time.Second))
}

// subscribe starts poolStatus with the given interval (0: the default).
func (c *wsClient) subscribe(id string, intervalMs int) {
	c.t.Helper()
	vars := map[string]any{}
	if intervalMs != 0 {
		vars["ms"] = intervalMs
	}
	payload, _ := json.Marshal(map[string]any{"query": poolStatusSubscription, "variables": vars})
	c.send(wsMessage{ID: id, Type: "subscribe", Payload: payload})
}

// poolEvent is the payload of a poolStatus next message.
type poolEvent struct {
	Data struct {
		PoolStatus struct {
			Status       string
			CheckedOut   int
			Total        int
			AcquireCount int
		}
	}
	Errors []struct {
		Message    string
		Extensions struct{ Code, Field string }
	}
	Extensions struct {
		DB *struct{ Statements int }
	}
}

func decodeEvent(t testing.TB, m wsMessage) poolEvent {
	t.Helper()
	var ev poolEvent
	if err := json.Unmarshal(m.Payload, &ev); err != nil {
		t.Fatalf("payload %s: %v", m.Payload, err)
	}
	return ev
}

// waitComplete reads until the server completes id, returning how many
// events for id arrived meanwhile; any other message fails the test.
func (c *wsClient) waitComplete(id string, deadline time.Time) (events int) {
	c.t.Helper()
	for {
		m := c.next(deadline)
		switch {
		case m.ID == id && m.Type == "complete":
			return events
		case m.ID == id && m.Type == "next":
			events++
		default:
			c.t.Fatalf("unexpected %s %s %s", m.ID, m.Type, m.Payload)
		}
	}
}

// quiet fails if any message arrives within d: after a subscription ended
// there must be nothing more to read.
func (c *wsClient) quiet(d time.Duration) {
	c.t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case m, ok := <-c.msgs:
		if ok {
			c.t.Fatalf("message after the subscription ended: %s %s %s", m.ID, m.Type, m.Payload)
		}
	case <-timer.C:
	}
}

// TestSubscriptionPoolStatusTicks: poolStatus sends a snapshot at once and
// then one per interval, each costing no statement, and the whole
// subscription borrows no connection.
func TestSubscriptionPoolStatusTicks(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	before := a.pool.Stats().AcquireCount
	c := connect(t, a.srv)

	const interval = 200 * time.Millisecond
	start := time.Now()
	c.subscribe("1", int(interval/time.Millisecond))
	deadline := start.Add(3 * time.Second)
	var at []time.Time
	for len(at) < 5 {
		m := c.expect("next", deadline)
		if m.ID != "1" {
			t.Fatalf("event for id %q", m.ID)
		}
		ev := decodeEvent(t, m)
		if len(ev.Errors) > 0 || ev.Data.PoolStatus.Status == "" {
			t.Fatalf("event %s", m.Payload)
		}
		if ev.Extensions.DB == nil || ev.Extensions.DB.Statements != 0 {
			t.Fatalf("event ran statements: %s", m.Payload)
		}
		at = append(at, m.at)
	}
	first := at[0].Sub(start)
	gaps := make([]time.Duration, 0, len(at)-1)
	for i := 1; i < len(at); i++ {
		gaps = append(gaps, at[i].Sub(at[i-1]).Round(time.Millisecond))
	}
	mean := at[len(at)-1].Sub(at[0]) / time.Duration(len(gaps))
	t.Logf("interval %s: first event after %s, gaps %v, mean %s", interval, first.Round(time.Millisecond), gaps, mean.Round(time.Millisecond))
	if first > interval {
		t.Errorf("first event after %s: want it at once", first)
	}
	if mean < 150*time.Millisecond {
		t.Errorf("events %s apart on average, want about %s", mean, interval)
	}

	c.send(wsMessage{ID: "1", Type: "complete"})
	if n := c.waitComplete("1", time.Now().Add(2*time.Second)); n > 1 {
		t.Errorf("%d events after complete: want at most the one in flight", n)
	}
	c.quiet(3 * interval)
	if st := a.pool.Stats(); st.AcquireCount != before || st.Total != 0 {
		t.Errorf("the subscription borrowed: acquires %d -> %d, %+v", before, st.AcquireCount, st)
	}
}

// TestSubscriptionEndsGoroutines: when the client completes a
// subscription, or closes the socket, the server's goroutines for it (the
// resolver's ticker, gqlgen's operation) return. Not parallel: it counts
// the process's goroutines.
func TestSubscriptionEndsGoroutines(t *testing.T) {
	a := newAPI(t)
	acquires := a.pool.Stats().AcquireCount

	t.Run("complete", func(t *testing.T) {
		c := connect(t, a.srv)
		c.roundTrip()
		before := runtime.NumGoroutine()
		c.subscribe("1", 100)
		deadline := time.Now().Add(3 * time.Second)
		c.expect("next", deadline)
		c.expect("next", deadline)
		c.send(wsMessage{ID: "1", Type: "complete"})
		c.waitComplete("1", time.Now().Add(2*time.Second))
		waitGoroutines(t, before)
		c.quiet(300 * time.Millisecond)
		// The connection is still usable.
		c.subscribe("2", 100)
		c.expect("next", time.Now().Add(2*time.Second))
	})

	t.Run("close", func(t *testing.T) {
		before := runtime.NumGoroutine()
		c := connect(t, a.srv)
		c.subscribe("1", 100)
		c.expect("next", time.Now().Add(3*time.Second))
		c.close()
		waitGoroutines(t, before)
	})

	if got := a.pool.Stats().AcquireCount; got != acquires {
		t.Errorf("subscriptions borrowed %d connections", got-acquires)
	}
}

// waitGoroutines waits until the process is back to at most n goroutines.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSubscriptionBadInterval: an interval outside 100 ms to 60 s is
// BAD_USER_INPUT naming intervalMs, and the subscription ends at once.
func TestSubscriptionBadInterval(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	c := connect(t, a.srv)
	for i, ms := range []int{99, 60001, -1} {
		id := string(rune('a' + i))
		c.subscribe(id, ms)
		m := c.expect("next", time.Now().Add(3*time.Second))
		ev := decodeEvent(t, m)
		if m.ID != id || len(ev.Errors) != 1 || ev.Errors[0].Extensions.Code != graph.CodeBadUserInput || ev.Errors[0].Extensions.Field != "intervalMs" {
			t.Errorf("intervalMs %d: %s %s", ms, m.ID, m.Payload)
		}
		if n := c.waitComplete(id, time.Now().Add(2*time.Second)); n != 0 {
			t.Errorf("intervalMs %d: %d events after the error", ms, n)
		}
	}
	for _, ms := range []int{100, 60000} {
		c.subscribe("edge", ms)
		if ev := decodeEvent(t, c.expect("next", time.Now().Add(3*time.Second))); len(ev.Errors) > 0 {
			t.Errorf("intervalMs %d refused: %+v", ms, ev.Errors)
		}
		c.send(wsMessage{ID: "edge", Type: "complete"})
		c.waitComplete("edge", time.Now().Add(2*time.Second))
	}
}

// serveWithOrigins serves a's pool through a handler configured with
// CORS_ORIGINS as given.
func serveWithOrigins(t *testing.T, a *testAPI, corsOrigins string) *httptest.Server {
	t.Helper()
	cfg, err := config.Load(func(name string) string {
		if name == "CORS_ORIGINS" {
			return corsOrigins
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(newHandler(apiConfig{pool: a.pool, tokens: a.tokens, logger: slog.New(slog.DiscardHandler), cfg: cfg, metrics: metrics.New(), streams: web.NewStreams()}))
	t.Cleanup(srv.Close)
	return srv
}

// TestWebsocketOrigin: a page of another site may open a websocket only
// when CORS_ORIGINS allows its origin; without CORS_ORIGINS only pages of
// the server itself, and clients that send no Origin, may.
func TestWebsocketOrigin(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	allowing := serveWithOrigins(t, a, "https://app.example.com, http://localhost:5173")
	for _, tc := range []struct {
		name   string
		srv    *httptest.Server
		origin string
		ok     bool
	}{
		{"default, no Origin", a.srv, "", true},
		{"default, same origin", a.srv, a.srv.URL, true},
		{"default, other site", a.srv, "https://app.example.com", false},
		{"allowed origin", allowing, "https://app.example.com", true},
		{"allowed origin with port", allowing, "http://localhost:5173", true},
		{"other scheme", allowing, "http://app.example.com", false},
		{"other port", allowing, "http://localhost:5174", false},
		{"other site", allowing, "https://evil.example", false},
		{"null origin", allowing, "null", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, resp, err := dialWS(t, tc.srv, tc.origin)
			if !tc.ok {
				if err == nil {
					t.Fatal("websocket accepted")
				}
				if resp == nil || resp.StatusCode != http.StatusForbidden {
					t.Fatalf("refused with %v, want 403", err)
				}
				body, _ := io.ReadAll(resp.Body)
				var r gqlResponse
				if json.Unmarshal(body, &r) != nil || len(r.Errors) != 1 || r.Errors[0].Extensions.Code != graph.CodeForbidden {
					t.Errorf("body %s, want one FORBIDDEN error", body)
				}
				return
			}
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			c.init()
			c.subscribe("1", 100)
			if ev := decodeEvent(t, c.expect("next", time.Now().Add(3*time.Second))); len(ev.Errors) > 0 {
				t.Errorf("errors: %+v", ev.Errors)
			}
		})
	}
}

// TestCORS: an allowed origin's preflight is answered with the methods and
// headers the API takes, and its requests may be read; a disallowed one
// gets no CORS headers at all. "*" allows any origin.
func TestCORS(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	listed := serveWithOrigins(t, a, "https://app.example.com,http://localhost:5173/")
	anyOrigin := serveWithOrigins(t, a, "*")

	preflight := func(srv *httptest.Server, origin string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodOptions, srv.URL+"/query", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization,content-type")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	post := func(srv *httptest.Server, origin string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/query", strings.NewReader(`{"query":"{ poolStatus { status } }"}`))
		req.Header.Set("Origin", origin)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("POST from %s: status %d", origin, resp.StatusCode)
		}
		return resp
	}

	for _, tc := range []struct {
		srv    *httptest.Server
		origin string
	}{
		{listed, "https://app.example.com"},
		{listed, "http://localhost:5173"},
		{anyOrigin, "https://anything.example"},
	} {
		resp := preflight(tc.srv, tc.origin)
		h := resp.Header
		if resp.StatusCode != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != tc.origin ||
			!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") ||
			!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") ||
			!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Content-Type") ||
			h.Get("Access-Control-Max-Age") == "" || !strings.Contains(strings.Join(h.Values("Vary"), ","), "Origin") {
			t.Errorf("preflight from %s: %d %v", tc.origin, resp.StatusCode, h)
		}
		if got := post(tc.srv, tc.origin).Header.Get("Access-Control-Allow-Origin"); got != tc.origin {
			t.Errorf("POST from %s: Access-Control-Allow-Origin %q", tc.origin, got)
		}
	}

	for _, tc := range []struct {
		srv    *httptest.Server
		origin string
	}{
		{listed, "https://evil.example"},
		{listed, "http://app.example.com"},
		{a.srv, "https://app.example.com"}, // CORS_ORIGINS unset
	} {
		for _, resp := range []*http.Response{preflight(tc.srv, tc.origin), post(tc.srv, tc.origin)} {
			for name := range resp.Header {
				if strings.HasPrefix(name, "Access-Control-") {
					t.Errorf("%s from %s: %s: %q", resp.Request.Method, tc.origin, name, resp.Header.Get(name))
				}
			}
		}
	}
}

// TestCORSOriginsConfig: CORS_ORIGINS is a comma-separated list of
// origins or "*"; anything else is a configuration error naming it.
func TestCORSOriginsConfig(t *testing.T) {
	t.Parallel()
	load := func(v string) (config.Config, error) {
		return config.Load(func(name string) string {
			if name == "CORS_ORIGINS" {
				return v
			}
			return ""
		})
	}
	for v, want := range map[string]string{
		"":                             "",
		"*":                            "*",
		" https://App.example.com/ , ": "https://app.example.com",
		"https://app.example.com,http://localhost:5173": "https://app.example.com|http://localhost:5173",
		"https://*.example.com":                         "https://*.example.com",
	} {
		cfg, err := load(v)
		if err != nil {
			t.Errorf("%q: %v", v, err)
			continue
		}
		if got := strings.Join(cfg.CORSOrigins, "|"); got != want {
			t.Errorf("%q: %q, want %q", v, got, want)
		}
	}
	for _, v := range []string{"app.example.com", "ftp://app.example.com", "https://app.example.com/path", "https://", "https://[a"} {
		_, err := load(v)
		var cfgErr *config.Error
		if !errors.As(err, &cfgErr) || !strings.Contains(err.Error(), "CORS_ORIGINS") {
			t.Errorf("%q: %v, want a CORS_ORIGINS problem", v, err)
		}
	}
}
