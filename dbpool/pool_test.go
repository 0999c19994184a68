package dbpool_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"chatql/dbpool"
	"chatql/localpg/pgtest"
)

// TestHardCap drives far more goroutines than connections through the pool
// and samples the server side: it must never see more than size+overflow.
func TestHardCap(t *testing.T) {
	if testing.Short() {
		t.Skip("400 borrows by 100 goroutines: not in -short")
	}
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
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			var n int64
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", p.appName).Scan(&n); err == nil && n > maxSeen.Load() {
				maxSeen.Store(n)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
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
	waitFor(t, 5*time.Second, "pool shrinks back to size", func() bool {
		s := p.Stats()
		return s.CheckedOut == 0 && s.CheckedIn <= 3 && s.Total <= 3
	})
	waitFor(t, 5*time.Second, "server-side backends back to size", func() bool { return p.backends(t) <= 3 })
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
	waitFor(t, 5*time.Second, "idle steady state of 2", func() bool {
		s := p.Stats()
		return s.CheckedOut == 0 && s.Total == 2 && s.CheckedIn == 2 && s.Overflow == 0
	})
	waitFor(t, 5*time.Second, "server sees 2 backends", func() bool { return p.backends(t) == 2 })
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
	// A second: opening the holder's connection on a loaded machine must
	// not itself run into the timeout.
	p := newPool(t, config(1, 0, time.Second))
	ctx := context.Background()

	holder := hold(t, p.Pool)

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
	if !errors.As(err, &te) || te.Size != 1 || te.MaxOverflow != 0 || te.Timeout != time.Second {
		t.Errorf("timeout error does not name the limits: %#v", err)
	}
	// Not before the timeout; the upper bound only tells "after the
	// timeout" from "never", with room for a loaded machine.
	if waited < time.Second || waited > 6*time.Second {
		t.Errorf("waited %s, want about 1s", waited)
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
		time.Sleep(100 * time.Millisecond) // not synchronisation: time passing is the point
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

// TestPrePingAfterRestart restarts the whole test cluster, so it does not
// run in parallel with the other tests.
func TestPrePingAfterRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts the cluster: not in -short")
	}
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
	p, err := dbpool.New("postgres://nobody@127.0.0.1:1/none?connect_timeout=2", config(1, 0, 30*time.Second), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	start := time.Now()
	err = p.Ping(context.Background())
	if !errors.Is(err, dbpool.ErrUnavailable) || errors.Is(err, dbpool.ErrPoolTimeout) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %s to report an unreachable database: not at once, as if it waited for the pool timeout (30s)", d)
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
	cfg := config(1, 0, time.Second)
	cfg.Echo = true
	p, buf := newLoggedPool(t, cfg)
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

// TestEchoHidesParameters: the echo log shows a statement's text but not
// its arguments (password hashes, message bodies) unless EchoParameters
// is set.
func TestEchoHidesParameters(t *testing.T) {
	t.Parallel()
	const secret = "s3cret-argument-value"
	for _, show := range []bool{false, true} {
		cfg := config(1, 0, time.Second)
		cfg.Echo, cfg.EchoParameters = true, show
		p, buf := newLoggedPool(t, cfg)
		ctx := context.Background()
		if err := p.WithConn(ctx, func(db dbpool.DB) error {
			_, err := db.Exec(ctx, "SELECT $1::text AS echo_arg", secret)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		out := buf.String()
		if !strings.Contains(out, "echo_arg") {
			t.Errorf("EchoParameters=%v: the statement is not logged:\n%s", show, out)
		}
		if got := strings.Contains(out, secret); got != show {
			t.Errorf("EchoParameters=%v: argument in the log = %v:\n%s", show, got, out)
		}
	}
}

// TestSlowAcquireWarning: an acquire that waits past DB_SLOW_ACQUIRE logs a
// warning with the pool's counts; a fast one logs nothing.
func TestSlowAcquireWarning(t *testing.T) {
	t.Parallel()
	// A threshold far above what opening a connection takes on a loaded
	// machine, far below the pool timeout a queued acquire waits out.
	cfg := config(1, 0, 2*time.Second)
	cfg.SlowAcquire = time.Second
	p, buf := newLoggedPool(t, cfg)
	ctx := context.Background()
	if err := p.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "slow connection acquire") {
		t.Fatalf("a fast acquire was reported slow:\n%s", buf.String())
	}
	hold(t, p.Pool)
	_ = p.Ping(ctx) // times out after 2 s
	out := buf.String()
	for _, want := range []string{"slow connection acquire", "total=1", "active=1", "idle=0", "max_connections=1"} {
		if !strings.Contains(out, want) {
			t.Errorf("warning lacks %q:\n%s", want, out)
		}
	}
}

// TestSlowAcquireWarningThrottled: when many acquires are slow at once,
// as every waiter is under overload, one line is logged per interval and
// the next one counts those left out.
func TestSlowAcquireWarningThrottled(t *testing.T) {
	t.Parallel()
	cfg := config(1, 0, 1500*time.Millisecond)
	cfg.SlowAcquire = time.Second
	p, buf := newLoggedPool(t, cfg)
	dbpool.SetSlowLogEvery(p.Pool, time.Hour)
	hold(t, p.Pool)
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = p.Ping(ctx) // times out after 1.5 s
		}()
	}
	wg.Wait()
	if n := strings.Count(buf.String(), "slow connection acquire"); n != 1 {
		t.Fatalf("3 slow acquires within the interval logged %d lines, want 1:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "suppressed=0") {
		t.Errorf("the first warning should count nothing left out:\n%s", buf.String())
	}
	dbpool.SetSlowLogEvery(p.Pool, 0)
	_ = p.Ping(ctx)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if n := strings.Count(buf.String(), "slow connection acquire"); n != 2 {
		t.Fatalf("after the interval: %d lines, want 2:\n%s", n, buf.String())
	}
	if last := lines[len(lines)-1]; !strings.Contains(last, "suppressed=2") {
		t.Errorf("the next warning should count the 2 left out: %s", last)
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
		_, err := db.Exec(ctx, "SELECT pg_sleep(30)")
		return err
	})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57014" || time.Since(start) > 10*time.Second {
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
	// A threshold far above what a ping takes on a loaded machine.
	cfg := config(1, 0, time.Second)
	cfg.LeakThreshold = time.Second
	p, buf := newLoggedPool(t, cfg)
	ctx := context.Background()
	err := p.WithConn(ctx, func(db dbpool.DB) error {
		_, err := db.Exec(ctx, "SELECT pg_sleep(1.5)")
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

	c := config(2, 1, time.Second)
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
