package main

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestLeakWarning: an operation that holds its connection past
// DB_LEAK_THRESHOLD is reported once, with its name, how long it held the
// connection and the resolver that borrowed it, and again when it lets go;
// a fast one is not reported.
func TestLeakWarning(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	a := newAPI(t, func(o *apiOptions) {
		o.pool.LeakThreshold = time.Second
		o.logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	viewer, token := a.user("Ann")
	conv := a.conversation("", []string{viewer}, "hello")

	// Fast operations: no warning.
	for range 3 {
		if r := a.post(token, "query Fast { me { id } }", nil); len(r.Errors) > 0 {
			t.Fatal(string(r.Raw))
		}
	}
	if strings.Contains(logs.String(), "possible leak") {
		t.Fatalf("a fast operation was reported:\n%s", logs.String())
	}

	// A slow one: its mutation blocks on a row lock for 1.5 s.
	unlock := a.lockParticipants(conv)
	done := make(chan *gqlResponse, 1)
	go func() {
		done <- a.post(token, fmt.Sprintf(`mutation SlowRead { markConversationRead(conversationId: %q) { id } }`, conv), nil)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "possible leak") {
		if time.Now().After(deadline) {
			t.Fatalf("no leak warning:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	unlock()
	if r := <-done; len(r.Errors) > 0 {
		t.Fatalf("slow mutation: %s", r.Raw)
	}
	a.waitReleased()
	out := logs.String()
	if n := strings.Count(out, "DB_LEAK_THRESHOLD: possible leak"); n != 1 {
		t.Errorf("%d leak warnings, want 1:\n%s", n, out)
	}
	for _, want := range []string{`owner="mutation SlowRead"`, "borrowed_at=", "markConversationRead", "possible leak released"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}
