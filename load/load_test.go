package load_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"chatql/dbpool"
	"chatql/load"
)

func TestSeed(t *testing.T) {
	t.Parallel()
	url1, users1 := seeded(t)
	_, users2 := seeded(t)
	if strings.Join(users1, ",") != strings.Join(users2, ",") {
		t.Error("two seeds of one DataSet differ")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url1)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var heavy, minParts, maxParts, msgs, stale int
	q := func(sql string, dst *int, args ...any) {
		t.Helper()
		if err := conn.QueryRow(ctx, sql, args...).Scan(dst); err != nil {
			t.Fatal(err)
		}
	}
	q("SELECT count(*)::int FROM conversation_participants WHERE user_id = $1", &heavy, users1[0])
	q("SELECT min(n)::int FROM (SELECT count(*) n FROM conversation_participants GROUP BY conversation_id) c", &minParts)
	q("SELECT max(n)::int FROM (SELECT count(*) n FROM conversation_participants GROUP BY conversation_id) c", &maxParts)
	q("SELECT count(*)::int FROM messages", &msgs)
	q(`SELECT count(*)::int FROM conversations c WHERE last_message_at IS DISTINCT FROM (SELECT max(created_at) FROM messages m WHERE m.conversation_id = c.id)
		OR last_seq <> (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)
		OR last_seq <> (SELECT coalesce(max(seq), 0) FROM messages m WHERE m.conversation_id = c.id)`, &stale)
	if heavy < 50 || minParts < 2 || maxParts > 6 || msgs != small.Messages || stale != 0 {
		t.Errorf("heavy user in %d conversations, %d-%d participants, %d messages, %d stale last_message_at or last_seq", heavy, minParts, maxParts, msgs, stale)
	}
}

// TestCeiling runs the raw-SQL ceiling briefly and checks it measured
// something real: requests, no errors, connections within the pool's cap.
func TestCeiling(t *testing.T) {
	t.Parallel()
	url, users := seeded(t)
	cfg := dbpool.DefaultConfig()
	cfg.Size, cfg.MaxOverflow, cfg.ApplicationName = 2, 1, "ceiling-test"
	pool, err := dbpool.New(url, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ctx := context.Background()
	sampleConn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer sampleConn.Close(ctx)
	clients := make([]load.Client, 8)
	for i := range clients {
		clients[i].UserID = users[i]
	}
	r, err := load.CeilingRun{Pool: pool, Clients: clients, Concurrency: 8, Duration: 500 * time.Millisecond,
		Conversations: 20, Messages: 10, Sample: load.BackendSampler(sampleConn, cfg.ApplicationName)}.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests() == 0 || r.ErrorCount() != 0 || r.MaxBackends < 1 || r.MaxBackends > 3 {
		t.Fatalf("ceiling run: %d requests, errors %v, max backends %d", r.Requests(), r.Errors, r.MaxBackends)
	}
	var out bytes.Buffer
	load.PrintTable(&out, []load.Result{r})
	if !strings.Contains(out.String(), "ceiling") {
		t.Errorf("table: %s", out.String())
	}
}

func TestPercentiles(t *testing.T) {
	t.Parallel()
	r := load.Result{Elapsed: time.Second}
	for i := 1; i <= 100; i++ {
		r.Latencies = append(r.Latencies, time.Duration(i)*time.Millisecond)
	}
	if r.Percentile(0.5) != 50*time.Millisecond || r.Percentile(0.99) != 99*time.Millisecond || r.Max() != 100*time.Millisecond || r.Throughput() != 100 {
		t.Errorf("p50 %s p99 %s max %s rps %.0f", r.Percentile(0.5), r.Percentile(0.99), r.Max(), r.Throughput())
	}
}
