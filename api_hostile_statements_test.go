package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"chatql/dbpool"
	"chatql/graph"
)

// The statement budget through the real handler: alias fan-out of root
// fields that each run SQL is priced out before it runs, and whatever still
// needs more statements than DB_MAX_STATEMENTS stops at the budget with
// TOO_MANY_STATEMENTS, gives its connection back and stores nothing of an
// unfinished write.

// conversationAliases is an operation of n aliases of conversation(id: $c)
// { unreadCount }: one statement each.
func conversationAliases(n int) string {
	var b strings.Builder
	b.WriteString("query($c: ID!) {")
	for i := range n {
		fmt.Fprintf(&b, " c%d: conversation(id: $c) { unreadCount }", i)
	}
	b.WriteString(" }")
	return b.String()
}

// withMaxStatements is an apiOptions adjustment: a budget of n.
func withMaxStatements(n int) func(*apiOptions) {
	return func(o *apiOptions) { o.pool.MaxStatements = n }
}

// codeQueryTooLarge is the code of a document refused for its size alone,
// where the server bounds that: it may refuse the largest fan-out before
// its complexity is computed, which is as good.
const codeQueryTooLarge = "QUERY_TOO_LARGE"

// TestStatementsAliasFanOutRefused: more aliases of conversation than the
// budget has statements are refused before they run, with
// COMPLEXITY_LIMIT_EXCEEDED, without borrowing a connection or sending a
// statement; 9,000 of them (9,002 statements before the budget) too.
func TestStatementsAliasFanOutRefused(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	ann, token := a.user("Ann")
	conv := a.conversation("", []string{ann}, "hello")
	a.waitReleased()
	vars := map[string]any{"c": conv}

	acquires, statements := a.pool.Stats().AcquireCount, a.counter.n.Load()
	expectRequestError(t, "budget + 1 aliases", a.post(token, conversationAliases(dbpool.DefaultMaxStatements+1), vars), graph.CodeComplexityLimit)
	r := a.post(token, conversationAliases(9000), vars)
	code := graph.CodeComplexityLimit
	if len(r.Errors) > 0 && r.Errors[0].Extensions.Code == codeQueryTooLarge {
		code = codeQueryTooLarge
	}
	expectRequestError(t, "9,000 aliases", r, code)
	if got := a.pool.Stats().AcquireCount; got != acquires {
		t.Errorf("refused operations borrowed %d connections", got-acquires)
	}
	if got := a.counter.n.Load(); got != statements {
		t.Errorf("refused operations ran %d statements", got-statements)
	}

	// A handful of aliases is an ordinary operation.
	r = a.post(token, conversationAliases(3), vars)
	if !r.ok() {
		t.Errorf("3 aliases: %s", r.Raw)
	}
}

// TestStatementsOverBudget: an operation within the complexity limit that
// needs more statements than the budget (the Inbox's 4, with a budget of 3)
// fails with TOO_MANY_STATEMENTS naming the budget, sends no statement past
// it, and gives its connection back; the server goes on serving.
func TestStatementsOverBudget(t *testing.T) {
	t.Parallel()
	a := newAPI(t, withMaxStatements(3))
	token := inboxFixture(a)
	a.waitReleased()

	before := a.counter.n.Load()
	r := a.post(token, graph.InboxQuery, nil)
	expectCode(t, "inbox over a budget of 3", r, graph.CodeTooManyStatements, "")
	if r.Status != http.StatusOK {
		t.Errorf("HTTP %d, want 200: the operation ran", r.Status)
	}
	if !strings.Contains(r.Errors[0].Message, "3 database statements") {
		t.Errorf("message %q does not name the budget", r.Errors[0].Message)
	}
	if got := a.counter.n.Load() - before; got != 3 {
		t.Errorf("the server saw %d statements, want the budget's 3", got)
	}
	if r.Extensions.DB == nil || r.Extensions.DB.Statements != 3 {
		t.Errorf("extensions.db %+v, want 3 statements", r.Extensions.DB)
	}
	a.waitReleased()

	if r := a.post(token, `{ me { id } }`, nil); !r.ok() {
		t.Errorf("a small operation after one over budget: %s", r.Raw)
	}
	a.waitReleased()
}

// TestStatementsMutationOverBudget: a mutation that reaches the budget in
// its transaction is rolled back and stores nothing; a mutation of the same
// operation that committed before stays committed.
func TestStatementsMutationOverBudget(t *testing.T) {
	t.Parallel()
	// sendMessage runs 4 statements (viewer, lock, insert, notify), the
	// second one of an operation 3 (the viewer is loaded once).
	for _, tc := range []struct {
		name      string
		budget    int
		mutation  string
		committed int // messages stored
		failed    []string
	}{
		{"one sendMessage, budget 3", 3,
			`mutation($c: ID!) { sendMessage(input: {conversationId: $c, body: "one"}) { id } }`,
			0, []string{"sendMessage"}},
		{"two sendMessages, budget 5", 5,
			`mutation($c: ID!) { first: sendMessage(input: {conversationId: $c, body: "first"}) { id }
			second: sendMessage(input: {conversationId: $c, body: "second"}) { id } }`,
			1, []string{"second"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := newAPI(t, withMaxStatements(tc.budget))
			ann, token := a.user("Ann")
			conv := a.conversation("", []string{ann})
			a.waitReleased()
			before := a.rows()

			r := a.post(token, tc.mutation, map[string]any{"c": conv})
			expectCode(t, tc.name, r, graph.CodeTooManyStatements, "")
			var failed []string
			for _, e := range r.Errors {
				failed = append(failed, fmt.Sprint(e.Path...))
			}
			if fmt.Sprint(failed) != fmt.Sprint(tc.failed) {
				t.Errorf("failed fields %v, want %v: %s", failed, tc.failed, r.Raw)
			}
			a.waitReleased()
			before["messages"] += tc.committed
			a.expectRows(tc.name, before)
		})
	}
}

// TestStatementsInboxWithinDefaultBudget: the Inbox runs well within the
// default budget.
func TestStatementsInboxWithinDefaultBudget(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	token := inboxFixture(a)
	r := a.post(token, graph.InboxQuery, nil)
	var inbox struct{ Conversations struct{ Edges []any } }
	r.into(t, &inbox)
	if len(inbox.Conversations.Edges) != 20 {
		t.Errorf("inbox: %d conversations, want 20", len(inbox.Conversations.Edges))
	}
	if st := r.Extensions.DB; st == nil || st.Statements*4 > dbpool.DefaultMaxStatements {
		t.Errorf("extensions.db %+v: the Inbox should need at most a quarter of the default budget of %d", st, dbpool.DefaultMaxStatements)
	} else {
		t.Logf("Inbox: %d statements of a budget of %d", st.Statements, dbpool.DefaultMaxStatements)
	}
}

// BenchmarkStatementsAliasFanOut: what refusing 9,000 aliases of
// conversation costs the server (decoding, parsing, validation,
// complexity), through the in-process handler: ns/op and the process's CPU
// per op. Each document differs (a trailing comment), as a hostile
// client's would, so the parsed-query cache does not help. Before the
// pricing the operation ran 9,002 statements on one connection for about
// 0.8 s.
func BenchmarkStatementsAliasFanOut(b *testing.B) {
	a := newAPI(b)
	ann, token := a.user("Ann")
	conv := a.conversation("", []string{ann}, "hello")
	query := conversationAliases(9000)
	handler := a.srv.Config.Handler
	i := 0
	run := func() int {
		i++
		body, _ := json.Marshal(map[string]any{"query": fmt.Sprintf("%s # %d", query, i), "variables": map[string]any{"c": conv}})
		req := httptest.NewRequest(http.MethodPost, "/query", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code != requestErrorStatus("") {
			b.Fatalf("status %d: %.300s", rec.Code, rec.Body.Bytes())
		}
		return len(body)
	}
	size := run()
	acquires := a.pool.Stats().AcquireCount
	cpu := processCPU(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		run()
	}
	b.StopTimer()
	b.ReportMetric(float64((processCPU(b)-cpu).Milliseconds())/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(size), "request-bytes")
	if got := a.pool.Stats().AcquireCount; got != acquires {
		b.Errorf("refused operations borrowed %d connections", got-acquires)
	}
}

// processCPU is the CPU time (user and system) the test process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
