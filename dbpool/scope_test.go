package dbpool_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"chatql/dbpool"
)

// TestScopeConcurrentUse: many goroutines share one scope, as gqlgen's
// resolvers do; they all succeed on exactly one borrowed connection.
func TestScopeConcurrentUse(t *testing.T) {
	t.Parallel()
	p := newPool(t, config(3, 2, 5*time.Second))
	ctx := context.Background()
	s := p.Scope()
	defer s.Release()

	const n = 50
	var wg sync.WaitGroup
	pids := make([]uint32, n)
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rows, err := dbpool.Collect(ctx, s, "SELECT pg_backend_pid()::bigint FROM generate_series(1, $1::int)", []any{i + 1}, pgx.RowTo[int64])
			if err != nil {
				errs <- err
				return
			}
			if len(rows) != i+1 {
				errs <- errors.New("short result")
				return
			}
			pids[i] = uint32(rows[0])
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent query: %v", err)
	}
	for i := range pids {
		if pids[i] != pids[0] {
			t.Fatalf("queries ran on different backends: %d and %d", pids[0], pids[i])
		}
	}
	st := p.Stats()
	if st.AcquireCount != 1 || st.CheckedOut != 1 {
		t.Errorf("one scope borrowed %d connections (checked out %d), want 1", st.AcquireCount, st.CheckedOut)
	}
	if got := s.Stats().Statements; got != n {
		t.Errorf("scope counted %d statements, want %d", got, n)
	}
	s.Release()
	if got := p.Stats().CheckedOut; got != 0 {
		t.Errorf("checked out after release: %d", got)
	}
}

func TestScopeUnusedNeverAcquires(t *testing.T) {
	t.Parallel()
	p := newPool(t, config(1, 0, time.Second))
	s := p.Scope()
	s.Release()
	s.Release()
	if st := p.Stats(); st.AcquireCount != 0 || st.Total != 0 {
		t.Fatalf("an unused scope touched the pool: %+v", st)
	}
	if st := s.Stats(); st.Borrowed || st.Statements != 0 {
		t.Fatalf("unused scope stats: %+v", st)
	}
}

// TestScopeReleasePaths: the connection comes back after success, a SQL
// error, a panic in the caller and a cancelled context.
func TestScopeReleasePaths(t *testing.T) {
	t.Parallel()
	p := newPool(t, config(1, 0, 2*time.Second))
	ctx := context.Background()

	checkReturned := func(t *testing.T) {
		t.Helper()
		if got := p.Stats().CheckedOut; got != 0 {
			t.Fatalf("checked out = %d after release", got)
		}
		// With size 1 and overflow 0, a leak would make this time out.
		if err := p.Ping(ctx); err != nil {
			t.Fatalf("pool unusable after release: %v", err)
		}
	}

	t.Run("success", func(t *testing.T) {
		s := p.Scope()
		if _, err := s.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		s.Release()
		checkReturned(t)
	})
	t.Run("sql error", func(t *testing.T) {
		s := p.Scope()
		if _, err := s.Exec(ctx, "SELECT * FROM no_such_table"); err == nil {
			t.Fatal("bad SQL succeeded")
		}
		// The connection is still good for the rest of the scope.
		if _, err := s.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatalf("scope unusable after a SQL error: %v", err)
		}
		s.Release()
		checkReturned(t)
	})
	t.Run("panic", func(t *testing.T) {
		func() {
			defer func() { _ = recover() }()
			s := p.Scope()
			defer s.Release()
			if _, err := s.Exec(ctx, "SELECT 1"); err != nil {
				t.Fatal(err)
			}
			panic("resolver bug")
		}()
		checkReturned(t)
	})
	t.Run("panic while reading rows", func(t *testing.T) {
		s := p.Scope()
		func() {
			defer func() { _ = recover() }()
			_ = s.Rows(ctx, "SELECT 1", nil, func(pgx.Rows) error { panic("scan bug") })
		}()
		// The lock was given back: the scope still works and releases.
		if _, err := s.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatalf("scope stuck after a panic: %v", err)
		}
		s.Release()
		checkReturned(t)
	})
	t.Run("cancelled context", func(t *testing.T) {
		s := p.Scope()
		cctx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(cctx, s.Release) // what operation middleware does
		defer stop()
		done := make(chan error, 1)
		go func() {
			_, err := s.Exec(cctx, "SELECT pg_sleep(30)")
			done <- err
		}()
		waitFor(t, 5*time.Second, "query running", func() bool { return p.Stats().CheckedOut == 1 })
		cancel()
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("cancelled query succeeded")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("cancelled query did not return")
		}
		waitFor(t, 5*time.Second, "released on cancel", func() bool { return p.Stats().CheckedOut == 0 })
		if _, err := s.Exec(ctx, "SELECT 1"); !errors.Is(err, dbpool.ErrScopeReleased) {
			t.Fatalf("use after release: err = %v, want ErrScopeReleased", err)
		}
		checkReturned(t)
	})
}

func TestScopeTransactions(t *testing.T) {
	t.Parallel()
	p := newPool(t, config(1, 0, 2*time.Second))
	ctx := context.Background()
	if err := p.WithConn(ctx, func(db dbpool.DB) error {
		_, err := db.Exec(ctx, "CREATE TABLE t (v text PRIMARY KEY)")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	count := func(v string) int {
		t.Helper()
		var n int
		err := p.WithConn(ctx, func(db dbpool.DB) error {
			var err error
			n, err = dbpool.CollectOne(ctx, db, "SELECT count(*)::int FROM t WHERE v = $1", []any{v}, pgx.RowTo[int])
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	insert := func(db dbpool.DB, v string) error {
		_, err := db.Exec(ctx, "INSERT INTO t VALUES ($1)", v)
		return err
	}

	if err := p.WithTx(ctx, func(db dbpool.DB) error { return insert(db, "committed") }); err != nil {
		t.Fatal(err)
	}
	errBoom := errors.New("boom")
	if err := p.WithTx(ctx, func(db dbpool.DB) error {
		if err := insert(db, "returned error"); err != nil {
			return err
		}
		return errBoom
	}); !errors.Is(err, errBoom) {
		t.Fatalf("WithTx err = %v", err)
	}
	func() {
		defer func() { _ = recover() }()
		_ = p.WithTx(ctx, func(db dbpool.DB) error {
			_ = insert(db, "panicked")
			panic("bug")
		})
	}()
	// A scope released with its transaction still open rolls it back.
	s := p.Scope()
	func() {
		defer func() { _ = recover() }()
		_ = s.InTx(ctx, func(ctx context.Context) error {
			_ = insert(s, "released mid-transaction")
			s.Release()
			panic("stop")
		})
	}()

	if count("committed") != 1 || count("returned error") != 0 || count("panicked") != 0 || count("released mid-transaction") != 0 {
		t.Fatal("transaction outcomes wrong")
	}
	if st := p.Stats(); st.CheckedOut != 0 {
		t.Fatalf("checked out after transactions: %+v", st)
	}
}

// TestScopeTimeoutSticks: once a scope could not borrow, its other callers
// fail at once rather than each waiting out the timeout again.
func TestScopeTimeoutSticks(t *testing.T) {
	t.Parallel()
	// Ten callers each waiting out a timeout of a second would take ten:
	// the bound below tells that from one wait, however loaded the machine.
	p := newPool(t, config(1, 0, time.Second))
	ctx := context.Background()
	hold(t, p.Pool)
	s := p.Scope()
	defer s.Release()
	start := time.Now()
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Exec(ctx, "SELECT 1"); !errors.Is(err, dbpool.ErrPoolTimeout) {
				t.Errorf("err = %v, want ErrPoolTimeout", err)
			}
		}()
	}
	wg.Wait()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("10 callers of one scope took %s: each waited for the pool", d)
	}
	if got := p.Stats().Timeouts; got != 1 {
		t.Errorf("timeouts = %d, want 1", got)
	}
}

// TestScopeYield: a yielded connection goes back to the pool and the next
// statement borrows again; inside a transaction Yield keeps it.
func TestScopeYield(t *testing.T) {
	t.Parallel()
	p := newPool(t, config(1, 0, 2*time.Second))
	ctx := context.Background()
	s := p.Scope()
	defer s.Release()
	if _, err := s.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	s.Yield()
	if st := p.Stats(); st.CheckedOut != 0 {
		t.Fatalf("yielded connection still checked out: %+v", st)
	}
	if err := p.Ping(ctx); err != nil { // someone else can use it meanwhile
		t.Fatal(err)
	}
	if _, err := s.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.AcquireCount != 3 || st.CheckedOut != 1 {
		t.Fatalf("after re-borrowing: %+v", st)
	}
	err := s.InTx(ctx, func(ctx context.Context) error {
		s.Yield()
		if got := p.Stats().CheckedOut; got != 1 {
			t.Errorf("Yield inside a transaction gave the connection back")
		}
		_, err := s.Exec(ctx, "SELECT 1")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Statements != 5 || !st.Borrowed || st.Held <= 0 {
		t.Errorf("scope stats: %+v", st)
	}
}

// TestCancelKeepsConnection: a statement whose caller gives up is cancelled
// on the server; the connection survives and is reused, not replaced.
func TestCancelKeepsConnection(t *testing.T) {
	t.Parallel()
	p := newPool(t, config(1, 0, 2*time.Second))
	ctx := context.Background()
	var first uint32
	if err := p.WithConn(ctx, func(db dbpool.DB) error { first = pid(t, ctx, db); return nil }); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		err := p.WithConn(cctx, func(db dbpool.DB) error {
			_, err := db.Exec(cctx, "SELECT pg_sleep(10)")
			return err
		})
		cancel()
		if err == nil {
			t.Fatal("cancelled statement succeeded")
		}
	}
	var again uint32
	if err := p.WithConn(ctx, func(db dbpool.DB) error { again = pid(t, ctx, db); return nil }); err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	if again != first || st.Opened != 1 || st.Invalid != 0 {
		t.Errorf("cancellations cost connections: pid %d then %d, stats %+v", first, again, st)
	}
}

// TestScopeNextUnitForgetsFailure: a long-lived scope (a subscription) whose
// borrow failed in one unit of work borrows again in the next, instead of
// failing every later unit at once; Yield, within one unit, keeps failing.
func TestScopeNextUnitForgetsFailure(t *testing.T) {
	t.Parallel()
	p := newPool(t, config(1, 0, time.Second))
	ctx := context.Background()
	holder := p.Scope()
	if _, err := holder.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	s := p.Scope()
	defer s.Release()
	if _, err := s.Exec(ctx, "SELECT 1"); !errors.Is(err, dbpool.ErrPoolTimeout) {
		t.Fatalf("borrow with the pool held: err = %v, want ErrPoolTimeout", err)
	}
	holder.Release()
	s.Yield()
	if _, err := s.Exec(ctx, "SELECT 1"); !errors.Is(err, dbpool.ErrPoolTimeout) {
		t.Fatalf("after Yield, the same unit: err = %v, want the failure to stick", err)
	}
	s.NextUnit()
	if _, err := s.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("after NextUnit, with a free connection: %v", err)
	}
	s.NextUnit()
	if st := p.Stats(); st.CheckedOut != 0 {
		t.Errorf("NextUnit kept the connection: %+v", st)
	}
}

// TestScopeCommitAfterRelease: a transaction that Release rolled back (the
// operation's context was cancelled while fn ran) is reported as an error,
// never as a commit, and nothing it wrote is stored.
func TestScopeCommitAfterRelease(t *testing.T) {
	t.Parallel()
	p := newPool(t, config(2, 0, 2*time.Second))
	ctx := context.Background()
	if err := p.WithConn(ctx, func(db dbpool.DB) error {
		_, err := db.Exec(ctx, "CREATE TABLE commit_after_release (x int)")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	s := p.Scope()
	err := s.InTx(ctx, func(ctx context.Context) error {
		if _, err := s.Exec(ctx, "INSERT INTO commit_after_release VALUES (1)"); err != nil {
			return err
		}
		s.Release() // what a cancelled operation's AfterFunc does
		return nil
	})
	if !errors.Is(err, dbpool.ErrRolledBack) {
		t.Fatalf("InTx after Release: err = %v, want ErrRolledBack", err)
	}
	var n int
	if err := p.WithConn(ctx, func(db dbpool.DB) error {
		return db.Rows(ctx, "SELECT count(*)::int FROM commit_after_release", nil, func(rows pgx.Rows) error {
			var err error
			n, err = pgx.CollectExactlyOneRow(rows, pgx.RowTo[int])
			return err
		})
	}); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d rows stored by a rolled-back transaction", n)
	}
}

// TestWithConnHonoursContext: a context already done runs nothing and
// borrows nothing; one cancelled while fn runs gives the connection back at
// once, and fn's next statement fails instead of borrowing again.
func TestWithConnHonoursContext(t *testing.T) {
	t.Parallel()
	p := newPool(t, config(1, 0, 2*time.Second))
	done, cancel := context.WithCancel(context.Background())
	cancel()
	ran := false
	err := p.WithConn(done, func(dbpool.DB) error { ran = true; return nil })
	if !errors.Is(err, context.Canceled) || ran {
		t.Fatalf("WithConn on a done context: err = %v, ran = %v", err, ran)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err = p.WithConn(ctx, func(db dbpool.DB) error {
		if _, err := db.Exec(ctx, "SELECT 1"); err != nil {
			return err
		}
		cancel()
		// The connection comes back without fn returning.
		waitFor(t, 5*time.Second, "connection returned on cancel", func() bool { return p.Stats().CheckedOut == 0 })
		_, err := db.Exec(context.Background(), "SELECT 1")
		return err
	})
	if !errors.Is(err, dbpool.ErrScopeReleased) {
		t.Fatalf("statement after cancel: err = %v, want ErrScopeReleased", err)
	}
	if st := p.Stats(); st.AcquireCount != 1 {
		t.Errorf("acquires = %d, want 1", st.AcquireCount)
	}
}
