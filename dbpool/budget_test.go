package dbpool_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"chatql/dbpool"
)

// The statement budget of a scope's unit of work (Config.MaxStatements).
// Each test writes rows as its statements, so that the table shows which
// statements reached the server.

// budgetPool is a pool of one connection whose scopes may run max
// statements per unit of work, with an empty table "t" to write to.
func budgetPool(t *testing.T, max int, adjust ...func(*dbpool.Config)) *testPool {
	t.Helper()
	cfg := config(1, 0, 5*time.Second)
	cfg.MaxStatements = max
	for _, f := range adjust {
		f(&cfg)
	}
	p := newPool(t, cfg)
	ctx := context.Background()
	if err := p.WithConn(ctx, func(db dbpool.DB) error {
		_, err := db.Exec(ctx, "CREATE TABLE t (x int)")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return p
}

// insert writes x to t through db.
func insert(ctx context.Context, db dbpool.DB, x int) error {
	_, err := db.Exec(ctx, "INSERT INTO t VALUES ($1)", x)
	return err
}

// stored returns the values in t, in order.
func (p *testPool) stored(t *testing.T) []int {
	t.Helper()
	ctx := context.Background()
	var xs []int
	if err := p.WithConn(ctx, func(db dbpool.DB) error {
		var err error
		xs, err = dbpool.Collect(ctx, db, "SELECT x FROM t ORDER BY x", nil, pgx.RowTo[int])
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return xs
}

// expectOverBudget checks that err is the budget's error, naming max.
func expectOverBudget(t *testing.T, what string, err error, max int) {
	t.Helper()
	var budget *dbpool.StatementBudgetError
	if !errors.Is(err, dbpool.ErrTooManyStatements) || !errors.As(err, &budget) || budget.Max != max {
		t.Errorf("%s: err = %v, want ErrTooManyStatements naming a budget of %d", what, err, max)
	}
}

// TestStatementBudget: a scope runs its budget's statements; the next one
// fails with ErrTooManyStatements and is not sent, through Exec and Rows
// alike, and the connection goes back at Release as usual.
func TestStatementBudget(t *testing.T) {
	t.Parallel()
	p := budgetPool(t, 3)
	ctx := context.Background()
	s := p.Scope()
	defer s.Release()
	for x := 1; x <= 3; x++ {
		if err := insert(ctx, s, x); err != nil {
			t.Fatalf("statement %d of 3: %v", x, err)
		}
	}
	expectOverBudget(t, "Exec past the budget", insert(ctx, s, 4), 3)
	_, err := dbpool.Collect(ctx, s, "INSERT INTO t VALUES (5) RETURNING x", nil, pgx.RowTo[int])
	expectOverBudget(t, "Rows past the budget", err, 3)
	if st := s.Stats(); st.Statements != 3 {
		t.Errorf("scope counted %d statements, want the 3 sent", st.Statements)
	}
	s.Release()
	if st := p.Stats(); st.CheckedOut != 0 {
		t.Errorf("checked out after Release: %+v", st)
	}
	// One connection in all: a connection kept would make this time out.
	if got := p.stored(t); !slices.Equal(got, []int{1, 2, 3}) {
		t.Errorf("stored %v, want [1 2 3]: a statement past the budget reached the server", got)
	}
	if _, err := s.Exec(ctx, "SELECT 1"); !errors.Is(err, dbpool.ErrScopeReleased) {
		t.Errorf("after Release: err = %v, want ErrScopeReleased", err)
	}
}

// TestStatementBudgetCountsOnlyStatements: BEGIN and COMMIT, the pre-ping
// of a connection borrowed again after Yield, and the statement timeout's
// set_config sent with each statement behind a pooler are not spent; a
// statement refused for the budget borrows nothing.
func TestStatementBudgetCountsOnlyStatements(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		adjust func(*dbpool.Config)
	}{
		{"direct", func(*dbpool.Config) {}},
		// Behind a pooler every statement outside a transaction goes in a
		// batch after set_config, and BEGIN carries SET LOCAL. PostgreSQL
		// itself runs both as a pooler would pass them on.
		{"pooler", func(c *dbpool.Config) { c.Pooler, c.StatementTimeout = dbpool.PoolerSession, 10*time.Second }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := budgetPool(t, 3, func(c *dbpool.Config) { c.PrePing = true }, tc.adjust)
			ctx := context.Background()
			s := p.Scope()
			defer s.Release()
			// The pool's one connection is idle (budgetPool used it): this
			// borrow pre-pings it.
			if err := s.InTx(ctx, func(ctx context.Context) error {
				if err := insert(ctx, s, 1); err != nil {
					return err
				}
				return insert(ctx, s, 2)
			}); err != nil {
				t.Fatalf("a transaction of 2 statements within a budget of 3: %v", err)
			}
			s.Yield()
			if err := insert(ctx, s, 3); err != nil { // borrows (and pre-pings) again
				t.Fatalf("third statement, after Yield: %v", err)
			}
			s.Yield()
			acquires := p.Stats().AcquireCount
			expectOverBudget(t, "fourth statement", insert(ctx, s, 4), 3)
			if st := p.Stats(); st.AcquireCount != acquires || st.CheckedOut != 0 {
				t.Errorf("a statement refused for the budget borrowed a connection: %+v", st)
			}
			if got := p.stored(t); !slices.Equal(got, []int{1, 2, 3}) {
				t.Errorf("stored %v, want [1 2 3]", got)
			}
		})
	}
}

// TestStatementBudgetNextUnit: each unit of work of a long-lived scope (an
// event of a subscription) gets a full budget.
func TestStatementBudgetNextUnit(t *testing.T) {
	t.Parallel()
	p := budgetPool(t, 2)
	ctx := context.Background()
	s := p.Scope()
	defer s.Release()
	x := 0
	for unit := 1; unit <= 3; unit++ {
		for range 2 {
			x++
			if err := insert(ctx, s, x); err != nil {
				t.Fatalf("unit %d, statement %d: %v", unit, x, err)
			}
		}
		expectOverBudget(t, "third statement of a unit", insert(ctx, s, 100+unit), 2)
		s.NextUnit()
		if st := p.Stats(); st.CheckedOut != 0 {
			t.Fatalf("unit %d: NextUnit kept the connection: %+v", unit, st)
		}
	}
	if got := p.stored(t); !slices.Equal(got, []int{1, 2, 3, 4, 5, 6}) {
		t.Errorf("stored %v, want [1 2 3 4 5 6]", got)
	}
}

// TestStatementBudgetRollsBack: a transaction whose work goes past the
// budget is rolled back, and nothing of it is stored; a transaction the
// scope committed before stays committed; the connection goes back clean.
func TestStatementBudgetRollsBack(t *testing.T) {
	t.Parallel()
	p := budgetPool(t, 3)
	ctx := context.Background()
	s := p.Scope()
	defer s.Release()
	if err := s.InTx(ctx, func(ctx context.Context) error { return insert(ctx, s, 1) }); err != nil {
		t.Fatalf("first transaction: %v", err)
	}
	err := s.InTx(ctx, func(ctx context.Context) error {
		for x := 10; x < 20; x++ {
			if err := insert(ctx, s, x); err != nil {
				return err
			}
		}
		return nil
	})
	expectOverBudget(t, "transaction past the budget", err, 3)
	s.Release()
	if st := p.Stats(); st.CheckedOut != 0 {
		t.Errorf("checked out after Release: %+v", st)
	}
	if got := p.stored(t); !slices.Equal(got, []int{1}) {
		t.Errorf("stored %v, want [1]: the committed row only", got)
	}
}

// TestStatementBudgetNotForBackgroundWork: WithConn and WithTx run the
// server's own work, which the budget does not limit.
func TestStatementBudgetNotForBackgroundWork(t *testing.T) {
	t.Parallel()
	p := budgetPool(t, 2)
	ctx := context.Background()
	if err := p.WithTx(ctx, func(db dbpool.DB) error {
		for x := 1; x <= 5; x++ {
			if err := insert(ctx, db, x); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("WithTx of 5 statements with a budget of 2: %v", err)
	}
	if got := p.stored(t); len(got) != 5 {
		t.Errorf("stored %v, want 5 rows", got)
	}
}

// TestStatementBudgetConfig: a negative budget is refused; 0 means none.
func TestStatementBudgetConfig(t *testing.T) {
	t.Parallel()
	cfg := config(1, 0, time.Second)
	cfg.MaxStatements = -1
	if _, err := dbpool.New("postgres://127.0.0.1/x", cfg, nil); err == nil {
		t.Error("New accepted MaxStatements -1")
	}
	p := budgetPool(t, 0)
	ctx := context.Background()
	s := p.Scope()
	defer s.Release()
	for x := 1; x <= dbpool.DefaultMaxStatements+1; x++ {
		if err := insert(ctx, s, x); err != nil {
			t.Fatalf("statement %d without a budget: %v", x, err)
		}
	}
}
