package migrations_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"chatql/localpg/pgtest"
	"chatql/migrations"
)

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m, func(ctx context.Context, url string) error {
		_, err := migrations.Up(ctx, url, slog.New(slog.DiscardHandler))
		return err
	}))
}

// emptyDatabase creates a database with no schema at all.
func emptyDatabase(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("empty_%d", time.Now().UnixNano())
	conn, err := pgx.Connect(ctx, pgtest.SuperuserURL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, pgtest.SuperuserURL("postgres"))
		if err == nil {
			_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
			c.Close(ctx)
		}
	})
	return pgtest.SuperuserURL(name)
}

// TestConcurrentUp: several replicas starting at once apply each migration
// exactly once and agree on the version.
func TestConcurrentUp(t *testing.T) {
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
}
