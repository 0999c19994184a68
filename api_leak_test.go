package main

import (
	"context"
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

	// A slow one: its mutation blocks on a row lock until the warning.
	unlock := a.lockParticipants(conv)
	type result struct {
		r   *gqlResponse
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := a.client.query(context.Background(), token, fmt.Sprintf(`mutation SlowRead { markConversationRead(conversationId: %q) { id } }`, conv), nil)
		done <- result{r, err}
	}()
	waitFor(t, 20*time.Second, "a leak warning", func() bool { return strings.Contains(logs.String(), "possible leak") },
		func() string { return "log:\n" + logs.String() })
	unlock()
	if res := <-done; !res.r.ok() {
		t.Fatalf("slow mutation: %v %+v", res.err, res.r)
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
