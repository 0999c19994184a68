package dbpool

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DB is what code that runs SQL takes: a Scope, including the one WithConn
// and WithTx pass to their functions. Rows are read inside Rows' callback,
// while the connection is held; nothing outlives the call.
type DB interface {
	// Exec runs a statement that returns no rows.
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	// Rows runs a query and calls read with its rows. read must only scan
	// (pgx.CollectRows and friends): the connection is held meanwhile.
	Rows(ctx context.Context, sql string, args []any, read func(pgx.Rows) error) error
}

// Collect runs a query on db and maps every row with fn.
func Collect[T any](ctx context.Context, db DB, sql string, args []any, fn pgx.RowToFunc[T]) ([]T, error) {
	var out []T
	err := db.Rows(ctx, sql, args, func(rows pgx.Rows) error {
		var err error
		out, err = pgx.CollectRows(rows, fn)
		return err
	})
	return out, err
}

// CollectOne runs a query on db and maps its first row with fn; it returns
// pgx.ErrNoRows when there is none.
func CollectOne[T any](ctx context.Context, db DB, sql string, args []any, fn pgx.RowToFunc[T]) (T, error) {
	var out T
	err := db.Rows(ctx, sql, args, func(rows pgx.Rows) error {
		var err error
		out, err = pgx.CollectOneRow(rows, fn)
		return err
	})
	return out, err
}

// Scope lends one unit of work (a GraphQL operation, a background job) at
// most one pooled connection. The connection is borrowed on first use, so a
// scope that never runs SQL never touches the pool, and it is held until
// Release.
//
// A Scope is safe for concurrent use: gqlgen resolves fields in parallel,
// while a pgx connection serves one statement at a time. Statements are
// serialised, and each one's rows are read completely before the next may
// start, so no caller code runs while the connection is locked beyond
// scanning rows.
//
// A unit of work runs at most Config.MaxStatements statements; past that
// each statement fails with ErrTooManyStatements without being sent, and
// the connection still goes back at Release as usual.
//
// Release is idempotent and safe to call from a deferred function after a
// panic or from another goroutine when the work's context is cancelled.
type Scope struct {
	pool *Pool
	// sem is a one-slot semaphore granting exclusive use of conn and tx; a
	// channel rather than a mutex so that waiting honours the context.
	sem      chan struct{}
	conn     *pgxpool.Conn
	tx       pgx.Tx
	released bool
	borrowed bool
	// failed is the error of a failed borrow. It sticks, so that the many
	// resolvers of an operation that could not get a connection fail at once
	// instead of each waiting out the pool timeout in turn.
	failed error

	// owner and site describe who borrowed, for leak warnings; leak is the
	// timer that fires one when the connection is held too long.
	owner, site string
	leak        *time.Timer
	leaked      atomic.Bool

	borrowedAt  time.Time
	acquireWait time.Duration
	held        time.Duration
	statements  atomic.Int64

	// budget is the most statements one unit of work may run
	// (Config.MaxStatements; 0: no limit), and spent how many the current
	// unit has run. Both are guarded by sem.
	budget, spent int
}

// ScopeStats describes what a scope cost: the statements it ran, how long it
// waited for connections and how long it held them, in total.
type ScopeStats struct {
	Statements  int
	Borrowed    bool
	AcquireWait time.Duration
	Held        time.Duration
}

// Scope returns a new scope on the pool. It does not borrow anything yet.
// Its unit of work may run at most Config.MaxStatements statements.
func (p *Pool) Scope() *Scope {
	return &Scope{pool: p, sem: make(chan struct{}, 1), budget: p.cfg.MaxStatements}
}

// NamedScope is Scope with the name of its owner ("query Inbox"), which a
// leak warning gives.
func (p *Pool) NamedScope(owner string) *Scope {
	s := p.Scope()
	s.owner = owner
	return s
}

// callerOwner names background work by where it was started from.
func callerOwner(skip int) string {
	if _, file, line, ok := runtime.Caller(skip + 1); ok {
		return fmt.Sprintf("background work at %s:%d", filepath.Base(filepath.Dir(file))+"/"+filepath.Base(file), line)
	}
	return "background work"
}

// WithConn runs fn with a scope that is released when fn returns or panics,
// or as soon as ctx is done: a cancelled job gives its connection back at
// once, even while fn is busy with something else, and its next statement
// fails with ErrScopeReleased. It is for work outside GraphQL operations
// (startup, background jobs), so that no code path holds a connection past
// its function. A ctx already done runs nothing.
func (p *Pool) WithConn(ctx context.Context, fn func(db DB) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("dbpool: %w", context.Cause(ctx))
	}
	s := p.backgroundScope(callerOwner(1))
	defer context.AfterFunc(ctx, s.Release)()
	defer s.Release()
	return fn(s)
}

// WithTx is WithConn inside a transaction: committed when fn returns nil,
// rolled back when it returns an error or panics, or when ctx is done.
func (p *Pool) WithTx(ctx context.Context, fn func(db DB) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("dbpool: %w", context.Cause(ctx))
	}
	s := p.backgroundScope(callerOwner(1))
	defer context.AfterFunc(ctx, s.Release)()
	defer s.Release()
	return s.InTx(ctx, func(context.Context) error { return fn(s) })
}

// backgroundScope is the scope of WithConn and WithTx. It has no statement
// budget: the budget guards against operations a client shapes (thousands
// of aliases), while background work runs the server's own code, whose
// statement count is fixed (seeding the demo data runs dozens).
func (p *Pool) backgroundScope(owner string) *Scope {
	s := p.NamedScope(owner)
	s.budget = 0
	return s
}

func (s *Scope) lock(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for connection of scope: %w", context.Cause(ctx))
	}
}

func (s *Scope) unlock() { <-s.sem }

// borrowLocked borrows the connection if the scope has none. s.sem is held.
func (s *Scope) borrowLocked(ctx context.Context) error {
	if s.released {
		return ErrScopeReleased
	}
	if s.conn != nil {
		return nil
	}
	if s.failed != nil {
		return s.failed
	}
	conn, wait, err := s.pool.acquire(ctx)
	s.acquireWait += wait
	if err != nil {
		if errors.Is(err, ErrPoolTimeout) || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrClosed) {
			s.failed = err
		}
		return err
	}
	s.conn = conn
	s.borrowed = true
	s.borrowedAt = time.Now()
	s.watchLocked(ctx)
	return nil
}

// watchLocked arms the leak detector for the connection just borrowed: if
// it is still held after Config.LeakThreshold, one warning says who holds
// it, for how long, and where it was borrowed. s.sem is held.
func (s *Scope) watchLocked(ctx context.Context) {
	threshold := s.pool.cfg.LeakThreshold
	if threshold <= 0 {
		return
	}
	if s.pool.borrowSite != nil {
		s.site = s.pool.borrowSite(ctx)
	}
	borrowedAt, owner, site := s.borrowedAt, s.owner, s.site
	s.leak = time.AfterFunc(threshold, func() {
		s.leaked.Store(true)
		if s.pool.observer != nil {
			s.pool.observer.ConnectionLeaked()
		}
		s.pool.logger.Warn("connection held longer than DB_LEAK_THRESHOLD: possible leak",
			"owner", owner, "held", time.Since(borrowedAt).Round(time.Millisecond), "borrowed_at", site,
			"threshold", threshold)
	})
}

// run gives fn, which sends one statement, exclusive use of the connection
// (or the open transaction), if the unit of work's budget allows one more.
// A statement past the budget is refused before anything is borrowed or
// sent; the caller's error ends an open transaction as any error does
// (InTx rolls back). Only statements run here are spent: BEGIN, COMMIT and
// ROLLBACK (InTx), pre-ping (the pool's, at borrow) and the statement
// timeout's set_config, which goes in the same batch as the statement
// (statementTimeout.on), are not. The DB interface sends one statement per
// call, so a call is a statement.
func (s *Scope) run(ctx context.Context, fn func(db DB) error) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.unlock()
	if s.released {
		return ErrScopeReleased
	}
	if s.budget > 0 && s.spent >= s.budget {
		return &StatementBudgetError{Max: s.budget}
	}
	if err := s.borrowLocked(ctx); err != nil {
		return err
	}
	s.spent++
	s.countStatement()
	if s.tx != nil {
		return fn(conn{s.tx})
	}
	return fn(s.pool.timeout.on(s.conn))
}

// Exec implements DB.
func (s *Scope) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	var tag pgconn.CommandTag
	err := s.run(ctx, func(db DB) error {
		var err error
		tag, err = db.Exec(ctx, sql, args...)
		return err
	})
	return tag, err
}

// Rows implements DB.
func (s *Scope) Rows(ctx context.Context, sql string, args []any, read func(pgx.Rows) error) error {
	return s.run(ctx, func(db DB) error { return db.Rows(ctx, sql, args, read) })
}

// readAll hands rows to read and closes them, reporting read's error or
// else the rows' own.
func readAll(rows pgx.Rows, read func(pgx.Rows) error) error {
	defer rows.Close()
	if err := read(rows); err != nil {
		return err
	}
	rows.Close()
	return rows.Err()
}

// InTx runs fn inside a transaction on the scope's connection: every
// statement the scope runs meanwhile, from any goroutine, is part of it. The
// transaction commits when fn returns nil and rolls back when it returns an
// error or panics. Called inside a transaction, InTx joins it.
func (s *Scope) InTx(ctx context.Context, fn func(ctx context.Context) error) (err error) {
	if err := s.lock(ctx); err != nil {
		return err
	}
	if s.tx != nil {
		s.unlock()
		return fn(ctx)
	}
	if err := s.borrowLocked(ctx); err != nil {
		s.unlock()
		return err
	}
	s.countStatement()
	tx, err := s.conn.BeginTx(ctx, s.pool.timeout.beginOptions())
	if err != nil {
		s.unlock()
		return fmt.Errorf("begin transaction: %w", err)
	}
	s.tx = tx
	s.unlock()

	done := false
	defer func() {
		if !done {
			s.endTx(ctx, false) // error or panic: roll back
		}
	}()
	if err := fn(ctx); err != nil {
		return err
	}
	done = true
	return s.endTx(ctx, true)
}

// endTx commits or rolls back the open transaction. A rollback must happen
// even when ctx is already cancelled, hence WithoutCancel.
func (s *Scope) endTx(ctx context.Context, commit bool) error {
	s.sem <- struct{}{}
	defer s.unlock()
	tx := s.tx
	if tx == nil {
		// Release rolled it back meanwhile (the work's context was
		// cancelled between fn's return and the commit).
		if commit {
			return fmt.Errorf("commit: %w", ErrRolledBack)
		}
		return nil
	}
	s.tx = nil
	s.countStatement()
	if commit {
		if err := tx.Commit(ctx); err != nil {
			s.pool.rollbacks.Add(1) // a failed COMMIT ends the transaction too
			return fmt.Errorf("commit: %w", err)
		}
		s.pool.commits.Add(1)
		return nil
	}
	s.pool.rollbacks.Add(1)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := tx.Rollback(rctx); err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	return nil
}

// Release gives the connection back to the pool, rolling back a transaction
// left open. It waits for a statement in flight on another goroutine to
// finish. After Release the scope refuses further use with ErrScopeReleased.
func (s *Scope) Release() {
	s.sem <- struct{}{}
	defer s.unlock()
	if s.released {
		return
	}
	s.released = true
	s.giveBackLocked()
}

// Yield gives the connection back early, when the caller knows it will not
// run SQL for a while (hashing a password, say), so that others need not
// queue for it meanwhile; the scope's next statement borrows again. It does
// nothing inside a transaction. The scope still never holds more than one
// connection at a time. A failed borrow still sticks: the rest of the same
// unit of work fails at once.
func (s *Scope) Yield() {
	s.sem <- struct{}{}
	defer s.unlock()
	if s.tx == nil {
		s.giveBackLocked()
	}
}

// NextUnit ends one unit of work of a long-lived scope (an event of a
// subscription) and begins the next: it gives the connection back, as
// Yield does, forgets a failed borrow, so that one event that could not
// get a connection does not fail every later one, and gives the next unit
// a full statement budget.
func (s *Scope) NextUnit() {
	s.sem <- struct{}{}
	defer s.unlock()
	if s.tx == nil {
		s.giveBackLocked()
	}
	s.failed = nil
	s.spent = 0
}

// giveBackLocked returns the connection, if any. s.sem is held.
func (s *Scope) giveBackLocked() {
	if s.conn == nil {
		return
	}
	if s.tx != nil {
		// If the rollback fails the connection is still in a transaction,
		// and pgxpool destroys it on release rather than reuse it.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.tx.Rollback(ctx)
		cancel()
		s.tx = nil
		s.pool.rollbacks.Add(1)
	}
	held := time.Since(s.borrowedAt)
	s.held += held
	if s.leak != nil {
		s.leak.Stop()
		s.leak = nil
		if s.leaked.Swap(false) {
			s.pool.logger.Warn("connection reported as a possible leak released",
				"owner", s.owner, "held", held.Round(time.Millisecond), "borrowed_at", s.site)
		}
	}
	if s.pool.observer != nil {
		s.pool.observer.ConnectionHeld(held)
	}
	s.pool.release(s.conn)
	s.conn = nil
}

// countStatement counts one statement sent, for the scope and the pool.
func (s *Scope) countStatement() {
	s.statements.Add(1)
	s.pool.statements.Add(1)
}

// Stats reports what the scope has cost so far.
func (s *Scope) Stats() ScopeStats {
	s.sem <- struct{}{}
	defer s.unlock()
	st := ScopeStats{
		Statements:  int(s.statements.Load()),
		Borrowed:    s.borrowed,
		AcquireWait: s.acquireWait,
		Held:        s.held,
	}
	if s.conn != nil {
		st.Held += time.Since(s.borrowedAt)
	}
	return st
}
