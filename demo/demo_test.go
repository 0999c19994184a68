package demo_test

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"chatql/dbpool"
	"chatql/demo"
	"chatql/localpg/pgtest"
	"chatql/migrations"
)

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m, migrations.Apply))
}

// TestSeedOnce: concurrent first starts seed exactly once; later starts
// leave the data alone.
func TestSeedOnce(t *testing.T) {
	t.Parallel()
	cfg := dbpool.DefaultConfig()
	cfg.Timeout = 10 * time.Second
	pool, err := dbpool.New(pgtest.NewDatabase(t), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ctx := context.Background()

	var wg sync.WaitGroup
	var mu sync.Mutex
	seeded := 0
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := demo.Seed(ctx, pool)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				seeded++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if seeded != 1 {
		t.Fatalf("seeded %d times, want 1", seeded)
	}
	if ok, err := demo.Seed(ctx, pool); ok || err != nil {
		t.Fatalf("seed on a seeded database: %v %v", ok, err)
	}

	count := func(sql string) int {
		var n int
		err := pool.WithConn(ctx, func(db dbpool.DB) error {
			var err error
			n, err = dbpool.CollectOne(ctx, db, sql, nil, pgx.RowTo[int])
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if got := count("SELECT count(*)::int FROM users"); got != len(demo.Users) {
		t.Errorf("users = %d", got)
	}
	if got := count("SELECT count(*)::int FROM conversations WHERE last_message_at IS NULL"); got != 0 {
		t.Errorf("%d conversations without last_message_at", got)
	}
	if got := count("SELECT count(*)::int FROM messages"); got == 0 {
		t.Error("no messages seeded")
	}
}
