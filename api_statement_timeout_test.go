package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"chatql/dbpool"
	"chatql/graph"
)

// TestPoolerTransactionModeStatementTimeout: chatql as deployed behind a
// transaction-mode pooler (DB_POOLER=transaction, with the statement
// timeout the configuration always sets): chat's own statements work
// with the timeout sent along (a write transaction, then reads under
// load), a statement that outlives it is stopped with DB_TIMEOUT, and
// afterwards another client of the pooler sees the server's own
// statement_timeout on the server connections chatql used.
func TestPoolerTransactionModeStatementTimeout(t *testing.T) {
	skipInShort(t, "load through PgBouncer")
	t.Parallel()
	b := startPooler(t, "transaction", 50, 2)
	a := newAPI(t, withoutAdmission, func(o *apiOptions) {
		o.pool.Pooler = dbpool.PoolerTransaction
		o.pool.QueryExecMode = pgx.QueryExecModeExec
		o.pool.StatementTimeout = 2 * time.Second
		o.poolURL = throughBouncer(b)
	})
	viewer, token := a.user("Ann")
	conv := a.conversation("", []string{viewer}, "hello")

	var sent struct{ SendMessage messageJSON }
	a.post(token, sendMessage, map[string]any{"c": conv, "b": "through the pooler"}).into(t, &sent)
	if sent.SendMessage.Body != "through the pooler" {
		t.Fatalf("sendMessage: %+v", sent.SendMessage)
	}
	res := runLoad(t, []*testAPI{a}, []string{token}, map[string]any{"query": graph.InboxQuery}, 16, 2*time.Second, 45*time.Second)
	t.Logf("transaction pooler with a statement timeout, 16 clients for 2 s: %s", res)
	if res.ok != res.requests || res.requests == 0 {
		t.Errorf("%d of %d requests failed; first failures:\n%s", res.requests-res.ok, res.requests, strings.Join(res.failures, "\n"))
	}

	unlock := a.lockParticipants(conv)
	r := a.post(token, markRead, map[string]any{"c": conv})
	unlock()
	if code := r.code(t); code != graph.CodeDBTimeout {
		t.Fatalf("code %s, want DB_TIMEOUT: %s", code, r.Raw)
	}
	a.waitReleased()

	cfg, err := pgx.ParseConfig(throughBouncer(b)(a.dbURL))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	other, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	// What a client that sets nothing sees, asked directly.
	const show = "SELECT current_setting('statement_timeout')"
	var want, got string
	if err := a.admin.QueryRow(t.Context(), show).Scan(&want); err != nil {
		t.Fatal(err)
	}
	// Each statement gets either of the pooler's two server connections.
	for range 4 {
		if err := other.QueryRow(t.Context(), show).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("another client of the pooler sees statement_timeout %s, want the server's %s", got, want)
		}
	}
}
