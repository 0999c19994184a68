package dbpool_test

// The harness of the package's tests: TestMain, pools on fresh databases,
// a superuser's view of their backends, and the one poll helper.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"chatql/dbpool"
	"chatql/localpg/pgtest"
	"chatql/migrations"
)

func TestMain(m *testing.M) {
	// Every pool is closed by its test: no goroutine may outlive them.
	os.Exit(pgtest.NoLeakedGoroutines(pgtest.Main(m, migrations.Apply)))
}

// waitFor is pgtest.WaitFor: poll a condition, fail the test at a deadline.
var waitFor = pgtest.WaitFor

// testPool is a pool on a fresh database with an application_name of its
// own, so its server-side backends can be counted in pg_stat_activity.
type testPool struct {
	*dbpool.Pool
	appName string
}

func newPool(t *testing.T, cfg dbpool.Config) *testPool {
	t.Helper()
	return newPoolLogging(t, cfg, slog.New(slog.DiscardHandler))
}

// newLoggedPool is newPool with the pool's log kept in the buffer it
// returns.
func newLoggedPool(t *testing.T, cfg dbpool.Config) (*testPool, *syncBuffer) {
	t.Helper()
	var buf syncBuffer
	return newPoolLogging(t, cfg, slog.New(slog.NewTextHandler(&buf, nil))), &buf
}

func newPoolLogging(t *testing.T, cfg dbpool.Config, logger *slog.Logger) *testPool {
	t.Helper()
	cfg.ApplicationName = "chatql-test-" + randomSuffix()
	p, err := dbpool.New(pgtest.NewDatabase(t), cfg, logger)
	if err != nil {
		t.Fatalf("new pool: %v", err)
	}
	t.Cleanup(p.Close)
	return &testPool{Pool: p, appName: cfg.ApplicationName}
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func config(size, overflow int, timeout time.Duration) dbpool.Config {
	c := dbpool.DefaultConfig()
	c.Size, c.MaxOverflow, c.Timeout = size, overflow, timeout
	return c
}

// hold borrows a connection of p and keeps it until the returned scope is
// released, or the test ends.
func hold(t *testing.T, p *dbpool.Pool) *dbpool.Scope {
	t.Helper()
	s := p.Scope()
	t.Cleanup(s.Release)
	if _, err := s.Exec(context.Background(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	return s
}

// superuser runs fn on a connection outside any pool under test.
func superuser(t testing.TB, fn func(conn *pgx.Conn) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgtest.SuperuserURL("postgres"))
	if err != nil {
		t.Fatalf("superuser connect: %v", err)
	}
	defer conn.Close(context.Background())
	if err := fn(conn); err != nil {
		t.Fatalf("superuser: %v", err)
	}
}

// backends counts the server connections of the pool, as the server sees them.
func (p *testPool) backends(t testing.TB) int {
	var n int
	superuser(t, func(conn *pgx.Conn) error {
		return conn.QueryRow(context.Background(),
			"SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", p.appName).Scan(&n)
	})
	return n
}

// terminate ends every server backend of the pool and waits until they are gone.
func (p *testPool) terminate(t testing.TB) int {
	t.Helper()
	var n int
	superuser(t, func(conn *pgx.Conn) error {
		return conn.QueryRow(context.Background(),
			"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", p.appName).Scan(&n)
	})
	waitFor(t, 5*time.Second, "terminated backends gone", func() bool { return p.backends(t) == 0 })
	return n
}

func pid(t testing.TB, ctx context.Context, db dbpool.DB) uint32 {
	t.Helper()
	v, err := dbpool.CollectOne(ctx, db, "SELECT pg_backend_pid()::bigint", nil, pgx.RowTo[int64])
	if err != nil {
		t.Fatalf("pg_backend_pid: %v", err)
	}
	return uint32(v)
}

// fillIdle opens n connections at once and returns them to the pool.
func fillIdle(t *testing.T, p *testPool, n int) {
	t.Helper()
	ctx := context.Background()
	scopes := make([]*dbpool.Scope, n)
	for i := range scopes {
		scopes[i] = p.Scope()
		if _, err := scopes[i].Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range scopes {
		s.Release()
	}
	waitFor(t, 5*time.Second, "connections idle", func() bool { return p.Stats().CheckedIn == n })
}

// syncBuffer is a log for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
