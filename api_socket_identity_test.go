package main

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/coder/websocket"

	"chatql/auth"
	"chatql/graph"
)

// whoAmI runs `me { id }` over c as subscription id and returns the id, or
// "" with the error code when it fails.
func whoAmI(t *testing.T, c *wsClient, id string) (userID, code string) {
	t.Helper()
	c.sendJSON(id, "subscribe", map[string]any{"query": `{ me { id } }`})
	m := c.next(time.Now().Add(10 * time.Second))
	if m.ID != id || m.Type != "next" {
		t.Fatalf("got %s %s %s, want next for %s", m.ID, m.Type, m.Payload, id)
	}
	var r struct {
		Data struct {
			Me *struct{ ID string }
		}
		Errors []struct{ Extensions struct{ Code string } }
	}
	if err := json.Unmarshal(m.Payload, &r); err != nil {
		t.Fatal(err)
	}
	c.expect("complete", time.Now().Add(10*time.Second))
	if len(r.Errors) > 0 {
		return "", r.Errors[0].Extensions.Code
	}
	if r.Data.Me == nil {
		return "", "(no data)"
	}
	return r.Data.Me.ID, ""
}

// TestSocketIdentity: a websocket runs as one user, decided at
// connection_init: the payload's token when there is one, else the
// upgrade request's Authorization header; two tokens naming different
// users, or a header token that does not verify, close it with 4403.
func TestSocketIdentity(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	ann, annToken := a.user("Ann")
	bob, bobToken := a.user("Bob")
	annSecond, _, err := a.tokens.Issue(ann)
	if err != nil {
		t.Fatal(err)
	}

	dial := func(header string) *wsClient {
		c, resp, err := dialWS(t, a.srv.URL, wsDial{authorization: header})
		if err != nil {
			t.Fatalf("dial: %v (response %v)", err, resp)
		}
		return c
	}
	refused := func(name string, c *wsClient) {
		t.Helper()
		_, err := c.closed(10 * time.Second)
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != graph.CloseForbidden {
			t.Errorf("%s: socket ended with %v, want close %d", name, err, graph.CloseForbidden)
		}
	}

	// The upgrade header alone signs the socket in.
	c := dial(bearer(annToken))
	c.init("")
	if got, code := whoAmI(t, c, "1"); got != ann {
		t.Errorf("upgrade header alone: me = %q (%s), want Ann", got, code)
	}

	// The payload's token wins over no header, and over a header naming
	// the same user.
	c = dial(bearer(annSecond))
	c.init(annToken)
	if got, code := whoAmI(t, c, "1"); got != ann {
		t.Errorf("same user twice: me = %q (%s), want Ann", got, code)
	}

	// Two different users: refused, before any operation runs.
	c = dial(bearer(annToken))
	c.sendJSON("", "connection_init", map[string]string{"Authorization": bearer(bobToken)})
	refused("header Ann, payload Bob", c)

	// A header token that does not verify is refused like a payload one.
	c = dial("Bearer not-a-token")
	c.sendJSON("", "connection_init", map[string]string{})
	refused("bad upgrade header", c)

	// Bob's socket, signed in by the payload, is Bob's.
	c = connectWS(t, a.srv.URL, bobToken)
	if got, code := whoAmI(t, c, "1"); got != bob {
		t.Errorf("payload alone: me = %q (%s), want Bob", got, code)
	}
}

// TestSocketHeaderTokenExpiry: a socket signed in by its upgrade header
// alone is closed with 4403 when that token expires, as one signed in by
// connection_init is.
func TestSocketHeaderTokenExpiry(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	ann, _ := a.user("Ann")
	short, err := auth.NewTokens(apiSecret, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	token, expires, err := short.Issue(ann)
	if err != nil {
		t.Fatal(err)
	}
	c, resp, err := dialWS(t, a.srv.URL, wsDial{authorization: bearer(token)})
	if err != nil {
		t.Fatalf("dial: %v (response %v)", err, resp)
	}
	c.init("")
	_, err = c.closed(20 * time.Second)
	if at := time.Now(); at.Before(expires) {
		t.Errorf("closed at %s, before the token expired at %s", at, expires)
	}
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != graph.CloseForbidden || ce.Reason != "access token expired" {
		t.Errorf("socket ended with %v, want %d access token expired", err, graph.CloseForbidden)
	}
}

// TestRealtimeOff: a server without the listener (REALTIME=off) answers
// messageAdded with REALTIME_DISABLED at once, and reports no listener.
func TestRealtimeOff(t *testing.T) {
	t.Parallel()
	a := newAPI(t) // no withRealtime: no hub, as with REALTIME=off
	ann, token := a.user("Ann")
	conv := a.conversation("", []string{ann})
	c := connectWS(t, a.srv.URL, token)
	c.subscribeMessages("1", conv)
	if code := c.subscriptionError("1"); code != graph.CodeRealtimeDisabled {
		t.Errorf("messageAdded without realtime: code %q, want %s", code, graph.CodeRealtimeDisabled)
	}
	if st := a.pool.Stats(); st.Listener != 0 {
		t.Errorf("listener %d without realtime", st.Listener)
	}
	a.waitReleased()
}
