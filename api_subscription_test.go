package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"chatql/config"
	"chatql/graph"
)

// The subscription tests speak graphql-transport-ws (the graphql-ws
// library's protocol) to the handler newHandler builds, over a real socket.

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

// TestSubscriptionPoolStatusTicks: poolStatus sends a snapshot at once and
// then one per interval, each costing no statement, and the whole
// subscription borrows no connection.
func TestSubscriptionPoolStatusTicks(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	before := a.pool.Stats().AcquireCount
	c := connectWS(t, a.srv.URL, "")

	// The first snapshot comes at once, not after the interval: with an
	// interval of a minute, the deadline of 10 s tells the two apart
	// however loaded the machine.
	start := time.Now()
	c.subscribe("first", 60000)
	m := c.expect("next", start.Add(10*time.Second))
	if ev := decodeEvent(t, m); m.ID != "first" || len(ev.Errors) > 0 || ev.Data.PoolStatus.Status == "" {
		t.Fatalf("first event: %s %s", m.ID, m.Payload)
	}
	first := m.at.Sub(start)
	c.send(wsMessage{ID: "first", Type: "complete"})
	c.waitComplete("first", time.Now().Add(10*time.Second))

	// Then one per interval.
	const interval = 200 * time.Millisecond
	c.subscribe("1", int(interval/time.Millisecond))
	var at []time.Time
	for len(at) < 5 {
		m := c.expect("next", time.Now().Add(10*time.Second))
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
	gaps := make([]time.Duration, 0, len(at)-1)
	for i := 1; i < len(at); i++ {
		gaps = append(gaps, at[i].Sub(at[i-1]).Round(time.Millisecond))
	}
	mean := at[len(at)-1].Sub(at[0]) / time.Duration(len(gaps))
	t.Logf("first event after %s; interval %s: gaps %v, mean %s", first.Round(time.Millisecond), interval, gaps, mean.Round(time.Millisecond))
	if mean < 150*time.Millisecond {
		t.Errorf("events %s apart on average, want about %s", mean, interval)
	}

	c.send(wsMessage{ID: "1", Type: "complete"})
	if n := c.waitComplete("1", time.Now().Add(10*time.Second)); n > 1 {
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
		c := connectWS(t, a.srv.URL, "")
		c.roundTrip()
		before := runtime.NumGoroutine()
		c.subscribe("1", 100)
		deadline := time.Now().Add(10 * time.Second)
		c.expect("next", deadline)
		c.expect("next", deadline)
		c.send(wsMessage{ID: "1", Type: "complete"})
		c.waitComplete("1", time.Now().Add(10*time.Second))
		waitGoroutines(t, before)
		c.quiet(300 * time.Millisecond)
		// The connection is still usable.
		c.subscribe("2", 100)
		c.expect("next", time.Now().Add(10*time.Second))
	})

	t.Run("close", func(t *testing.T) {
		before := runtime.NumGoroutine()
		c := connectWS(t, a.srv.URL, "")
		c.subscribe("1", 100)
		c.expect("next", time.Now().Add(10*time.Second))
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
	waitFor(t, 20*time.Second, fmt.Sprintf("at most %d goroutines", n), func() bool { return runtime.NumGoroutine() <= n },
		func() string {
			buf := make([]byte, 1<<20)
			return fmt.Sprintf("%d goroutines:\n%s", runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		})
}

// TestSubscriptionBadInterval: an interval outside 100 ms to 60 s is
// BAD_USER_INPUT naming intervalMs, and the subscription ends at once.
func TestSubscriptionBadInterval(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	c := connectWS(t, a.srv.URL, "")
	for i, ms := range []int{99, 60001, -1} {
		id := string(rune('a' + i))
		c.subscribe(id, ms)
		m := c.expect("next", time.Now().Add(10*time.Second))
		ev := decodeEvent(t, m)
		if m.ID != id || len(ev.Errors) != 1 || ev.Errors[0].Extensions.Code != graph.CodeBadUserInput || ev.Errors[0].Extensions.Field != "intervalMs" {
			t.Errorf("intervalMs %d: %s %s", ms, m.ID, m.Payload)
		}
		if n := c.waitComplete(id, time.Now().Add(10*time.Second)); n != 0 {
			t.Errorf("intervalMs %d: %d events after the error", ms, n)
		}
	}
	// An id of its own each: the server forgets an id only just after
	// sending its complete, so reusing it at once could be refused.
	for _, ms := range []int{100, 60000} {
		id := fmt.Sprintf("edge%d", ms)
		c.subscribe(id, ms)
		if ev := decodeEvent(t, c.expect("next", time.Now().Add(10*time.Second))); len(ev.Errors) > 0 {
			t.Errorf("intervalMs %d refused: %+v", ms, ev.Errors)
		}
		c.send(wsMessage{ID: id, Type: "complete"})
		c.waitComplete(id, time.Now().Add(10*time.Second))
	}
}

// withOrigins is an apiOptions adjustment: CORS_ORIGINS as given.
func withOrigins(corsOrigins string) func(*apiOptions) {
	return func(o *apiOptions) { o.corsOrigins = corsOrigins }
}

// TestWebsocketOrigin: a page of another site may open a websocket only
// when CORS_ORIGINS allows its origin; without CORS_ORIGINS only pages of
// the server itself, and clients that send no Origin, may.
func TestWebsocketOrigin(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	allowing := a.replica(t, withOrigins("https://app.example.com, http://localhost:5173")).srv.URL
	for _, tc := range []struct {
		name   string
		srv    string
		origin string
		ok     bool
	}{
		{"default, no Origin", a.srv.URL, "", true},
		{"default, same origin", a.srv.URL, a.srv.URL, true},
		{"default, other site", a.srv.URL, "https://app.example.com", false},
		{"allowed origin", allowing, "https://app.example.com", true},
		{"allowed origin with port", allowing, "http://localhost:5173", true},
		{"other scheme", allowing, "http://app.example.com", false},
		{"other port", allowing, "http://localhost:5174", false},
		{"other site", allowing, "https://evil.example", false},
		{"null origin", allowing, "null", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, resp, err := dialWS(t, tc.srv, wsDial{origin: tc.origin})
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
			c.init("")
			c.subscribe("1", 100)
			if ev := decodeEvent(t, c.expect("next", time.Now().Add(10*time.Second))); len(ev.Errors) > 0 {
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
	listed := a.replica(t, withOrigins("https://app.example.com,http://localhost:5173/")).srv.URL
	anyOrigin := a.replica(t, withOrigins("*")).srv.URL

	preflight := func(srv, origin string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodOptions, srv+"/query", nil)
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
	post := func(srv, origin string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv+"/query", strings.NewReader(`{"query":"{ poolStatus { status } }"}`))
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
		srv    string
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
		srv    string
		origin string
	}{
		{listed, "https://evil.example"},
		{listed, "http://app.example.com"},
		{a.srv.URL, "https://app.example.com"}, // CORS_ORIGINS unset
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
