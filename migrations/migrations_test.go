package migrations_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"chatql/localpg/pgtest"
	"chatql/migrations"
)

// TestConcurrentUp: several replicas starting at once apply each migration
// exactly once and agree on the version.
func TestConcurrentUp(t *testing.T) {
	if testing.Short() {
		// goose's session lock is retried every 5 s: the replicas that
		// lose the race wait that long.
		t.Skip("replicas wait seconds for the migration lock: not in -short")
	}
	t.Parallel()
	url := emptyDatabase(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	versions := make([]int64, 4)
	errs := make([]error, 4)
	for i := range versions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			versions[i], errs[i] = migrations.Up(ctx, url, slog.New(slog.DiscardHandler))
		}()
	}
	wg.Wait()
	for i := range versions {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		if versions[i] != versions[0] || versions[i] < 1 {
			t.Fatalf("versions disagree: %v", versions)
		}
	}
	// Running again is a no-op.
	if v, err := migrations.Up(ctx, url, slog.New(slog.DiscardHandler)); err != nil || v != versions[0] {
		t.Fatalf("second Up: %d %v", v, err)
	}
}

// TestSchema checks the rules the schema itself enforces.
func TestSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "INSERT INTO users (email, display_name) VALUES ('Ann@Example.com', 'Ann')"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO users (email, display_name) VALUES ('ann@example.COM', 'Other Ann')"); err == nil {
		t.Error("emails differing only in case were both accepted")
	}
	if _, err := conn.Exec(ctx, "INSERT INTO users (email, display_name) VALUES ('x@example.com', '')"); err == nil {
		t.Error("an empty display name was accepted")
	}
	for _, idx := range []string{"conversation_participants_user_idx", "messages_conversation_seq_key", "users_email_lower_idx"} {
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_indexes WHERE indexname = $1", idx).Scan(&n); err != nil || n != 1 {
			t.Errorf("index %s missing (%v)", idx, err)
		}
	}
	// Unread counts are index-only scans: the index that orders messages
	// by conversation and seq carries their authors.
	var def string
	if err := conn.QueryRow(ctx, "SELECT indexdef FROM pg_indexes WHERE indexname = 'messages_conversation_seq_key'").Scan(&def); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(def, "(conversation_id, seq) INCLUDE (author_id)") {
		t.Errorf("messages_conversation_seq_key is %s, want it to include author_id", def)
	}
}
