package dbpool_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"chatql/dbpool"
	"chatql/localpg/pgtest"
)

// connectRecorder is a dbpool.Observer that keeps the connect timings.
type connectRecorder struct {
	mu       sync.Mutex
	connects []time.Duration
}

func (*connectRecorder) AcquireWait(time.Duration, error) {}
func (*connectRecorder) ConnectionHeld(time.Duration)     {}
func (*connectRecorder) ConnectionLeaked()                {}
func (r *connectRecorder) Connected(d time.Duration, err error) {
	if err == nil {
		r.mu.Lock()
		r.connects = append(r.connects, d)
		r.mu.Unlock()
	}
}

func (r *connectRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.connects)
}

// TestStatsCounts: statements and transactions are counted as scopes send
// them, every connection opened is timed, and the age of the oldest
// waiting acquire shows while one waits and goes back to 0 after.
func TestStatsCounts(t *testing.T) {
	t.Parallel()
	rec := &connectRecorder{}
	p, err := dbpool.New(pgtest.NewDatabase(t), config(1, 0, 30*time.Second), slog.New(slog.DiscardHandler), dbpool.WithObserver(rec))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	ctx := context.Background()

	before := p.Stats()
	if err := p.WithTx(ctx, func(db dbpool.DB) error {
		_, err := db.Exec(ctx, "SELECT 1")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	errAbort := errors.New("abort")
	if err := p.WithTx(ctx, func(db dbpool.DB) error { return errAbort }); !errors.Is(err, errAbort) {
		t.Fatalf("err = %v", err)
	}
	if err := p.WithConn(ctx, func(db dbpool.DB) error {
		_, err := db.Exec(ctx, "SELECT 1")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	s := p.Stats()
	// BEGIN, SELECT, COMMIT; BEGIN, ROLLBACK; SELECT.
	if got := s.Statements - before.Statements; got != 6 {
		t.Errorf("statements moved by %d, want 6", got)
	}
	if s.Commits-before.Commits != 1 || s.Rollbacks-before.Rollbacks != 1 {
		t.Errorf("commits %d, rollbacks %d, want 1 and 1", s.Commits-before.Commits, s.Rollbacks-before.Rollbacks)
	}
	if got := rec.count(); got != s.Opened || got == 0 {
		t.Errorf("%d connects timed, %d opened", got, s.Opened)
	}
	if s.OldestWaitMs != 0 {
		t.Errorf("oldest wait %v ms with nobody waiting", s.OldestWaitMs)
	}

	holder := hold(t, p)
	done := make(chan error, 1)
	go func() {
		done <- p.WithConn(ctx, func(db dbpool.DB) error {
			_, err := db.Exec(ctx, "SELECT 1")
			return err
		})
	}()
	waitFor(t, 10*time.Second, "an acquire waiting", func() bool { return p.Stats().Waiting == 1 })
	first := p.Stats().OldestWaitMs
	waitFor(t, 10*time.Second, "the oldest wait to grow", func() bool { return p.Stats().OldestWaitMs > first })
	holder.Release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.OldestWaitMs != 0 || s.Waiting != 0 {
		t.Errorf("after the wait: oldest %v ms, %d waiting", s.OldestWaitMs, s.Waiting)
	}
}
