package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"chatql/graph"
)

// The hostile-input tests: what an attacker or a broken client sends,
// through the real HTTP handler. Each refusal must be cheap, coded, short,
// and leave nothing behind (no connection borrowed, nothing stored).

// TestHostileTrickledBody: a body that does not arrive within the
// server's read timeout gets 408 with a coded error that names no socket
// address, and borrows no connection.
func TestHostileTrickledBody(t *testing.T) {
	t.Parallel()
	a := newAPI(t, func(o *apiOptions) {
		o.server = func(s *httptest.Server) { s.Config.ReadTimeout = 500 * time.Millisecond }
	})
	conn, err := net.Dial("tcp", strings.TrimPrefix(a.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Promise 100 bytes, send 10, then wait for the server's answer: the
	// server gives up when its read deadline passes, whatever it is.
	fmt.Fprintf(conn, "POST /query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"query\":")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a trickled body: %v", err)
	}
	raw, _ := io.ReadAll(resp.Body)
	r := a.decode(resp, raw)
	checkProtocol(t, r)
	if resp.StatusCode != http.StatusRequestTimeout || len(r.Errors) != 1 || r.Errors[0].Extensions.Code != graph.CodeBadUserInput {
		t.Errorf("HTTP %d, want 408 with one BAD_USER_INPUT: %s", resp.StatusCode, raw)
	}
	local, remote := conn.LocalAddr().String(), conn.RemoteAddr().String()
	if bytes.Contains(raw, []byte(local)) || bytes.Contains(raw, []byte(remote)) || bytes.Contains(raw, []byte("127.0.0.1")) {
		t.Errorf("the answer names socket addresses: %s", raw)
	}
	if n := a.pool.Stats().AcquireCount; n != 0 {
		t.Errorf("a body that never arrived borrowed %d connections", n)
	}
}

// TestHostileUndecodableBodies: a body that is not a GraphQL request is a
// 400 whose message says what is wrong in the request's terms, quotes at
// most a short excerpt of it, and names no Go type.
func TestHostileUndecodableBodies(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	huge := `{"query":` + strings.Repeat("x", 750_000)
	for _, tc := range []struct {
		name, body, want string
	}{
		{"query a number", `{"query": 1}`, `"query" must be a string, not a number`},
		{"variables an array", `{"query": "{ __typename }", "variables": []}`, `"variables" must be an object, not an array`},
		{"not an object", `[]`, `must be a JSON object`},
		{"750 KB of garbage", huge, "not valid JSON"},
		{"truncated", `{"query":`, "not valid JSON"},
	} {
		req, _ := http.NewRequest(http.MethodPost, a.srv.URL+"/query", strings.NewReader(tc.body))
		req.Header.Set("Content-Type", "application/json")
		resp, raw := a.do(req)
		r := a.decode(resp, raw)
		checkProtocol(t, r)
		if resp.StatusCode != http.StatusBadRequest || len(r.Errors) != 1 {
			t.Errorf("%s: HTTP %d, want 400 with one error: %.300s", tc.name, resp.StatusCode, raw)
			continue
		}
		msg := r.Errors[0].Message
		if !strings.Contains(msg, tc.want) {
			t.Errorf("%s: message %q, want it to say %q", tc.name, msg, tc.want)
		}
		for _, leak := range []string{"Go struct", "Go value", "RawParams", "map[string]interface"} {
			if strings.Contains(msg, leak) {
				t.Errorf("%s: message names a Go type (%s): %s", tc.name, leak, msg)
			}
		}
		if len(raw) > 400 {
			t.Errorf("%s: a %d-byte body got a %d-byte answer: %.300s", tc.name, len(tc.body), len(raw), raw)
		}
	}
	if n := a.pool.Stats().AcquireCount; n != 0 {
		t.Errorf("undecodable requests borrowed %d connections", n)
	}
}

// TestHostileVariableCoercion: variables follow the spec's input
// coercion: a String is not an Int (gqlparser accepts "10"), nor is a
// number outside 32 bits; both are request errors naming the variable,
// refused before any connection is borrowed.
func TestHostileVariableCoercion(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	_, token := a.user("Ann")
	a.waitReleased()
	before := a.pool.Stats().AcquireCount
	const q = `query($n: Int) { conversations(first: $n) { nodes { id } } }`
	for _, tc := range []struct {
		name string
		n    any
	}{
		{"a string of digits", "10"},
		{"2^31", int64(1) << 31},
		{"a fraction", 10.5},
		{"a boolean", true},
	} {
		r := a.post(token, q, map[string]any{"n": tc.n})
		expectRequestError(t, tc.name, r, "GRAPHQL_VALIDATION_FAILED")
		if len(r.Errors) == 1 && fmt.Sprint(r.Errors[0].Path) != "[variable n]" {
			t.Errorf("%s: path %v, want [variable n]", tc.name, r.Errors[0].Path)
		}
	}
	if got := a.pool.Stats().AcquireCount; got != before {
		t.Errorf("refused variables borrowed %d connections", got-before)
	}
	// A JSON number is an Int, and the default applies without one.
	for _, vars := range []map[string]any{{"n": 10}, {"n": json.Number("3")}, nil} {
		if r := a.post(token, q, vars); !r.ok() {
			t.Errorf("vars %v: %s", vars, r.Raw)
		}
	}
}

// TestHostileLegacySocketSignIn: over the older graphql-ws protocol a
// refused connection_init is answered with connection_error, whose text
// the client sees: it gives the reason, not the token verifier's detail.
func TestHostileLegacySocketSignIn(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	for _, tc := range []struct{ name, authorization string }{
		{"not a token", "Bearer not.a.token"},
		{"signed with another secret", "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"},
	} {
		c, resp, err := dialWS(t, a.srv.URL, wsDial{subprotocol: "graphql-ws"})
		if err != nil {
			t.Fatalf("dial: %v (response %v)", err, resp)
		}
		c.sendJSON("", "connection_init", map[string]string{"authorization": tc.authorization})
		before, _ := c.closed(10 * time.Second)
		var sawError bool
		for _, m := range before {
			if m.Type != "connection_error" {
				continue
			}
			sawError = true
			var p struct{ Message string }
			_ = json.Unmarshal(m.Payload, &p)
			if p.Message != "invalid or expired access token" {
				t.Errorf("%s: connection_error %s, want only the reason", tc.name, m.Payload)
			}
		}
		if !sawError {
			t.Errorf("%s: no connection_error before the close: %v", tc.name, before)
		}
	}
}

// TestHostileErrorEcho: a request error never grows with what the client
// sent: long names are quoted as short excerpts and thousands of errors
// are listed as twenty.
func TestHostileErrorEcho(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	long := strings.Repeat("z", 5000)
	var many strings.Builder
	many.WriteString("{")
	for i := range 400 { // the document limit's QUERY_MAX_FIELDS
		fmt.Fprintf(&many, " unknown%d", i)
	}
	many.WriteString(" }")
	for _, tc := range []struct {
		name, query string
		maxBytes    int
	}{
		{"a 5,000-character field name", "{ " + long + " }", 400},
		{"400 unknown fields", many.String(), 20 * 200},
	} {
		r := a.post("", tc.query, nil)
		expectRequestError(t, tc.name, r, "GRAPHQL_VALIDATION_FAILED")
		if len(r.Raw) > tc.maxBytes {
			t.Errorf("%s: %d-byte answer: %.300s", tc.name, len(r.Raw), r.Raw)
		}
		if len(r.Errors) > 20 {
			t.Errorf("%s: %d errors listed", tc.name, len(r.Errors))
		}
	}
}
