package dbpool_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"go.uber.org/goleak"

	"chatql/dbpool"
	"chatql/localpg/pgtest"
	"chatql/migrations"
)

func TestMain(m *testing.M) {
	code := pgtest.Main(m, func(ctx context.Context, url string) error {
		_, err := migrations.Up(ctx, url, slog.New(slog.DiscardHandler))
		return err
	})
	// Every pool is closed by its test: no goroutine may outlive them.
	if err := goleak.Find(); code == 0 && err != nil {
		fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
		code = 1
	}
	os.Exit(code)
}

// testPool is a pool on a fresh database with an application_name of its
// own, so its server-side backends can be counted in pg_stat_activity.
type testPool struct {
	*dbpool.Pool
	appName string
}

func newPool(t *testing.T, cfg dbpool.Config) *testPool {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	cfg.ApplicationName = "chatql-test-" + hex.EncodeToString(b[:])
	p, err := dbpool.New(pgtest.NewDatabase(t), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("new pool: %v", err)
	}
	t.Cleanup(p.Close)
	return &testPool{Pool: p, appName: cfg.ApplicationName}
}

func config(size, overflow int, timeout time.Duration) dbpool.Config {
	c := dbpool.DefaultConfig()
	c.Size, c.MaxOverflow, c.Timeout = size, overflow, timeout
	return c
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
	eventually(t, 5*time.Second, "terminated backends gone", func() bool { return p.backends(t) == 0 })
	return n
}

// eventually waits for cond, polling, and fails the test after timeout.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func pid(t testing.TB, ctx context.Context, db dbpool.DB) uint32 {
	t.Helper()
	v, err := dbpool.CollectOne(ctx, db, "SELECT pg_backend_pid()::bigint", nil, pgx.RowTo[int64])
	if err != nil {
		t.Fatalf("pg_backend_pid: %v", err)
	}
	return uint32(v)
}

// TestHardCap drives far more goroutines than connections through the pool
// and samples the server side: it must never see more than size+overflow.
func TestHardCap(t *testing.T) {
	t.Parallel()
	p := newPool(t, config(3, 2, 30*time.Second))
	ctx := context.Background()

	var maxSeen atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	conn, err := pgx.Connect(ctx, pgtest.SuperuserURL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			default:
			}
			var n int64
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", p.appName).Scan(&n); err == nil && n > maxSeen.Load() {
				maxSeen.Store(n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	const workers, rounds = 100, 4
	var wg sync.WaitGroup
	var failures atomic.Int64
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				err := p.WithConn(ctx, func(db dbpool.DB) error {
					_, err := db.Exec(ctx, "SELECT pg_sleep(0.05)")
					return err
				})
				if err != nil {
					failures.Add(1)
					t.Errorf("worker: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled

	t.Logf("%d borrows by %d goroutines in %s; max backends seen: %d", workers*rounds, workers, time.Since(start).Round(time.Millisecond), maxSeen.Load())
	if got := maxSeen.Load(); got > 5 {
		t.Errorf("saw %d backends, cap is 5", got)
	}
	if maxSeen.Load() < 5 {
		t.Errorf("saw only %d backends under load: overflow was never used", maxSeen.Load())
	}
	if failures.Load() > 0 {
		t.Fatalf("%d workers failed", failures.Load())
	}
	eventually(t, 5*time.Second, "pool shrinks back to size", func() bool {
		s := p.Stats()
		return s.CheckedOut == 0 && s.CheckedIn <= 3 && s.Total <= 3
	})
	eventually(t, 5*time.Second, "server-side backends back to size", func() bool { return p.backends(t) <= 3 })
	if s := p.Stats(); s.AcquireCount != workers*rounds || s.Timeouts != 0 {
		t.Errorf("stats after load: %+v", s)
	}
}

// TestShrinksAfterBurst: overflow connections are closed when returned.
func TestShrinksAfterBurst(t *testing.T) {
	t.Parallel()
	p := newPool(t, config(2, 3, 5*time.Second))
	ctx := context.Background()

	scopes := make([]*dbpool.Scope, 5)
	for i := range scopes {
		scopes[i] = p.Scope()
		if _, err := scopes[i].Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
	}
	if s := p.Stats(); s.CheckedOut != 5 || s.Total != 5 || s.Overflow != 3 {
		t.Fatalf("with 5 held: %+v", s)
	}
	if n := p.backends(t); n != 5 {
		t.Fatalf("server sees %d backends, want 5", n)
	}
	for _, s := range scopes {
		s.Release()
	}
	eventually(t, 5*time.Second, "idle steady state of 2", func() bool {
		s := p.Stats()
		return s.CheckedOut == 0 && s.Total == 2 && s.CheckedIn == 2 && s.Overflow == 0
	})
	eventually(t, 5*time.Second, "server sees 2 backends", func() bool { return p.backends(t) == 2 })
}

func TestLazy(t *testing.T) {
	t.Parallel()
	p := newPool(t, config(3, 2, time.Second))
	if s := p.Stats(); s.Total != 0 {
		t.Fatalf("new pool opened connections: %+v", s)
	}
	if n := p.backends(t); n != 0 {
		t.Fatalf("new pool has %d backends", n)
	}
}

// TestTimeout: with the only connection held, an acquire fails after the
// pool timeout with ErrPoolTimeout, and the held connection still works.
func TestTimeout(t *testing.T) {
	t.Parallel()
	p := newPool(t, config(1, 0, 200*time.Millisecond))
	ctx := context.Background()

	holder := p.Scope()
	defer holder.Release()
	if _, err := holder.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	err := p.WithConn(ctx, func(db dbpool.DB) error {
		_, err := db.Exec(ctx, "SELECT 1")
		return err
	})
	waited := time.Since(start)
	t.Logf("acquire failed after %s: %v", waited.Round(time.Millisecond), err)
	if !errors.Is(err, dbpool.ErrPoolTimeout) {
		t.Fatalf("err = %v, want ErrPoolTimeout", err)
	}
	var te *dbpool.TimeoutError
	if !errors.As(err, &te) || te.Size != 1 || te.MaxOverflow != 0 || te.Timeout != 200*time.Millisecond {
		t.Errorf("timeout error does not name the limits: %#v", err)
	}
	if waited < 200*time.Millisecond || waited > 600*time.Millisecond {
		t.Errorf("waited %s, want about 200ms", waited)
	}
	s := p.Stats()
	if s.Timeouts != 1 || s.Status != dbpool.StatusExhausted {
		t.Errorf("stats after timeout: %+v", s)
	}
	if _, err := holder.Exec(ctx, "SELECT 1"); err != nil {
		t.Errorf("held connection broken after a timeout: %v", err)
	}

	// The caller's own deadline is cancellation, not a pool timeout.
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err = p.WithConn(cctx, func(db dbpool.DB) error {
		_, err := db.Exec(cctx, "SELECT 1")
		return err
	})
	if errors.Is(err, dbpool.ErrPoolTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("caller deadline: err = %v, want context.DeadlineExceeded", err)
	}
	if got := p.Stats().Timeouts; got != 1 {
		t.Errorf("caller cancellation counted as a timeout: timeouts = %d", got)
	}
}

// TestRecycle: a connection older than the recycle age is replaced when it
// is next acquired, but never while it is in use.
func TestRecycle(t *testing.T) {
	t.Parallel()
	cfg := config(1, 0, 5*time.Second)
	cfg.Recycle = time.Second
	p := newPool(t, cfg)
	ctx := context.Background()

	// Hold one connection for well past the recycle age: it must stay the
	// same backend all along.
	s := p.Scope()
	first := pid(t, ctx, s)
	heldUntil := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(heldUntil) {
		if got := pid(t, ctx, s); got != first {
			t.Fatalf("connection replaced while in use: pid %d became %d", first, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.Release()

	var next uint32
	if err := p.WithConn(ctx, func(db dbpool.DB) error { next = pid(t, ctx, db); return nil }); err != nil {
		t.Fatal(err)
	}
	if next == first {
		t.Fatalf("connection older than the recycle age was handed out again (pid %d)", first)
	}
	if got := p.Stats().Recycled; got < 1 {
		t.Errorf("recycled = %d, want >= 1", got)
	}
}

// TestPrePingAfterTerminate: dead idle connections are discarded, counted
// as invalid, and replaced without the caller noticing.
func TestPrePingAfterTerminate(t *testing.T) {
	t.Parallel()
	p := newPool(t, config(3, 0, 5*time.Second))
	ctx := context.Background()
	fillIdle(t, p, 3)

	for round := 1; round <= 2; round++ {
		before := p.Stats().Invalid
		if n := p.terminate(t); n != 3 {
			t.Fatalf("terminated %d backends, want 3", n)
		}
		if err := p.Ping(ctx); err != nil {
			t.Fatalf("round %d: first acquire after terminate: %v", round, err)
		}
		if got := p.Stats().Invalid - before; got != 3 {
			t.Errorf("round %d: invalid grew by %d, want 3", round, got)
		}
		fillIdle(t, p, 3)
	}
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
	eventually(t, 5*time.Second, "connections idle", func() bool { return p.Stats().CheckedIn == n })
}

// TestPrePingAfterRestart restarts the whole test cluster, so it does not
// run in parallel with the other tests.
func TestPrePingAfterRestart(t *testing.T) {
	cluster := pgtest.Cluster()
	if cluster == nil {
		t.Skip("TEST_DATABASE_URL is set: this test restarts the server and needs the throwaway cluster")
	}
	p := newPool(t, config(2, 1, 5*time.Second))
	ctx := context.Background()
	fillIdle(t, p, 2)

	if err := cluster.Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if err := p.Ping(ctx); err != nil {
		t.Fatalf("first request after restart: %v", err)
	}
	if got := p.Stats().Invalid; got != 2 {
		t.Errorf("invalid = %d after restart, want 2", got)
	}
}

// TestUnavailable: a database that refuses connections is reported as
// ErrUnavailable at once, not after the pool timeout.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	p, err := dbpool.New("postgres://nobody@127.0.0.1:1/none?connect_timeout=2", config(1, 0, 10*time.Second), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	start := time.Now()
	err = p.Ping(context.Background())
	if !errors.Is(err, dbpool.ErrUnavailable) || errors.Is(err, dbpool.ErrPoolTimeout) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s to report an unreachable database", d)
	}
}

func TestBadConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []dbpool.Config{config(0, 1, time.Second), config(1, -1, time.Second), config(1, 0, 0)} {
		if _, err := dbpool.New("postgres://127.0.0.1/x", cfg, nil); err == nil {
			t.Errorf("New accepted %+v", cfg)
		}
	}
}

// TestEcho: DB_ECHO logs each statement with its text and command tag.
func TestEcho(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	cfg := config(1, 0, time.Second)
	cfg.Echo = true
	p, err := dbpool.New(pgtest.NewDatabase(t), cfg, slog.New(slog.NewTextHandler(&buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	if err := p.WithConn(ctx, func(db dbpool.DB) error {
		_, err := db.Exec(ctx, "SELECT 42 AS echo_me")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"sql Query", "SELECT 42 AS echo_me", "commandTag=\"SELECT 1\"", "time="} {
		if !strings.Contains(out, want) {
			t.Errorf("echo log lacks %q:\n%s", want, out)
		}
	}
}

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

// TestSlowAcquireWarning: an acquire that waits past DB_SLOW_ACQUIRE logs a
// warning with the pool's counts; a fast one logs nothing.
func TestSlowAcquireWarning(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	cfg := config(1, 0, 300*time.Millisecond)
	cfg.SlowAcquire = 100 * time.Millisecond
	p, err := dbpool.New(pgtest.NewDatabase(t), cfg, slog.New(slog.NewTextHandler(&buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	if err := p.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "slow connection acquire") {
		t.Fatalf("a fast acquire was reported slow:\n%s", buf.String())
	}
	holder := p.Scope()
	defer holder.Release()
	if _, err := holder.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	_ = p.Ping(ctx) // times out after 300 ms
	out := buf.String()
	for _, want := range []string{"slow connection acquire", "total=1", "active=1", "idle=0", "max_connections=1"} {
		if !strings.Contains(out, want) {
			t.Errorf("warning lacks %q:\n%s", want, out)
		}
	}
}

// TestStatementTimeout: a statement past DB_STATEMENT_TIMEOUT is stopped by
// the server, and its connection goes back healthy.
func TestStatementTimeout(t *testing.T) {
	t.Parallel()
	cfg := config(1, 0, 2*time.Second)
	cfg.StatementTimeout = 300 * time.Millisecond
	p := newPool(t, cfg)
	ctx := context.Background()
	var before uint32
	if err := p.WithConn(ctx, func(db dbpool.DB) error { before = pid(t, ctx, db); return nil }); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := p.WithConn(ctx, func(db dbpool.DB) error {
		_, err := db.Exec(ctx, "SELECT pg_sleep(5)")
		return err
	})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57014" || time.Since(start) > 3*time.Second {
		t.Fatalf("err = %v after %s, want statement timeout (57014) after about 300ms", err, time.Since(start))
	}
	var after uint32
	if err := p.WithConn(ctx, func(db dbpool.DB) error { after = pid(t, ctx, db); return nil }); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); after != before || st.Invalid != 0 || st.Opened != 1 {
		t.Errorf("connection not reused after a statement timeout: pid %d then %d, %+v", before, after, st)
	}
}

// TestLeakDetectionBackground: background work that holds its connection
// past the threshold is reported with where it was started.
func TestLeakDetectionBackground(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	cfg := config(1, 0, time.Second)
	cfg.LeakThreshold = 200 * time.Millisecond
	p, err := dbpool.New(pgtest.NewDatabase(t), cfg, slog.New(slog.NewTextHandler(&buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	err = p.WithConn(ctx, func(db dbpool.DB) error {
		_, err := db.Exec(ctx, "SELECT pg_sleep(0.5)")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Ping(ctx); err != nil { // fast: no warning
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Count(out, "possible leak\"") != 1 || !strings.Contains(out, "owner=\"background work at dbpool/pool_test.go:") ||
		!strings.Contains(out, "possible leak released") {
		t.Errorf("leak log:\n%s", out)
	}
}

// TestReserved: a connection reserved for the listener displaces overflow
// first, then size; the pool never opens more than the rest of the budget,
// and its snapshot keeps the budget as max_connections.
func TestReserved(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		size, overflow, reserved int
		wantSize, wantOverflow   int
	}{
		{3, 2, 1, 3, 1},
		{3, 0, 1, 2, 0},
		{2, 1, 2, 1, 0},
		{5, 10, 0, 5, 10},
	} {
		c := config(tc.size, tc.overflow, time.Second)
		c.Reserved = tc.reserved
		if size, overflow := c.Lendable(); size != tc.wantSize || overflow != tc.wantOverflow {
			t.Errorf("%d + %d, %d reserved: lendable %d + %d, want %d + %d", tc.size, tc.overflow, tc.reserved, size, overflow, tc.wantSize, tc.wantOverflow)
		}
	}
	bad := config(1, 0, time.Second)
	bad.Reserved = 1
	if err := bad.Validate(); err == nil {
		t.Error("1 + 0 with one reserved: Validate accepted a pool with no connection")
	}

	c := config(2, 1, 200*time.Millisecond)
	c.Reserved = 1
	p := newPool(t, c)
	ctx := context.Background()
	var scopes []*dbpool.Scope
	for range 2 {
		s := p.Scope()
		defer s.Release()
		if _, err := s.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		scopes = append(scopes, s)
	}
	third := p.Scope()
	defer third.Release()
	if _, err := third.Exec(ctx, "SELECT 1"); !errors.Is(err, dbpool.ErrPoolTimeout) {
		t.Fatalf("third borrow with 2 + 1 and one reserved: err = %v, want ErrPoolTimeout", err)
	}
	if n := p.backends(t); n != 2 {
		t.Errorf("%d backends open, want 2 (the budget of 3 less the reserved one)", n)
	}
	st := p.Stats()
	if st.MaxConnections != 3 || st.Total != 2 || st.Listener != 0 {
		t.Errorf("snapshot: max %d, total %d, listener %d; want 3, 2, 0 (no listener option)", st.MaxConnections, st.Total, st.Listener)
	}
}
