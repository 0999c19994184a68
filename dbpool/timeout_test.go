package dbpool_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"chatql/dbpool"
	"chatql/localpg/pgtest"
)

// The statement timeout in each deployment: directly, and through a
// PgBouncer in session and in transaction mode. The database of each test
// has a statement_timeout of its own (databaseDefault), which is what a
// client that sets none gets there: chatql must see its own timeout, and
// any other client of the pooler the database's.

const (
	chatqlTimeout   = 300 * time.Millisecond
	chatqlSees      = "300ms"
	databaseDefault = "7s"
)

// databaseWithDefault is a fresh database whose statement_timeout is
// databaseDefault. It returns the database's name, for pgtest.Bouncer.URL.
func databaseWithDefault(t *testing.T) (url, name string) {
	t.Helper()
	url = pgtest.NewDatabase(t)
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	superuser(t, func(conn *pgx.Conn) error {
		_, err := conn.Exec(context.Background(),
			"ALTER DATABASE "+pgx.Identifier{cfg.Database}.Sanitize()+" SET statement_timeout = '"+databaseDefault+"'")
		return err
	})
	return url, cfg.Database
}

// bouncedDatabase is a database from databaseWithDefault behind a new
// PgBouncer in mode with one server connection for all its clients; it
// returns the database's URL through the pooler.
func bouncedDatabase(t *testing.T, mode string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts PgBouncer: not in -short")
	}
	_, name := databaseWithDefault(t)
	b := pgtest.NewBouncer(t, pgtest.BouncerOptions{PoolMode: mode, MaxClientConn: 10, DefaultPoolSize: 1})
	return b.URL(name)
}

// timeoutConfig is a pool of one connection with chatqlTimeout.
func timeoutConfig(pooler dbpool.Pooler) dbpool.Config {
	cfg := config(1, 0, 5*time.Second)
	cfg.StatementTimeout = chatqlTimeout
	cfg.Pooler = pooler
	if pooler == dbpool.PoolerTransaction {
		cfg.QueryExecMode = pgx.QueryExecModeExec
	}
	return cfg
}

// writeCounter counts the writes to a pool's sockets. A client writes at
// least once per round trip, so a statement that costs one write costs
// one round trip.
type writeCounter struct{ n atomic.Int64 }

// option makes the pool dial through the counter.
func (w *writeCounter) option() dbpool.Option {
	return func(_ *dbpool.Pool, c *pgxpool.Config) {
		dial := c.ConnConfig.DialFunc
		c.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{Conn: conn, n: &w.n}, nil
		}
	}
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(b)
}

// writes runs fn and returns how many writes it cost.
func (w *writeCounter) writes(fn func()) int64 {
	before := w.n.Load()
	fn()
	return w.n.Load() - before
}

func currentTimeout(t *testing.T, db dbpool.DB) string {
	t.Helper()
	v, err := dbpool.CollectOne(context.Background(), db, "SELECT current_setting('statement_timeout')", nil, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("current_setting: %v", err)
	}
	return v
}

// expectStopped fails unless err is the server stopping a statement for
// its statement timeout.
func expectStopped(t *testing.T, what string, err error) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
		t.Errorf("%s: err = %v, want a statement timeout (57014)", what, err)
	}
}

// expectTimeout checks what every deployment promises, on a pool of one
// connection counted by w: statements in and outside transactions run
// with chatqlTimeout and are stopped by it, the connection stays in
// service, and the timeout costs no round trip. It returns the backend
// pid of chatql's last statement.
func expectTimeout(t *testing.T, p *dbpool.Pool, w *writeCounter) uint32 {
	t.Helper()
	ctx := context.Background()
	s := p.Scope()
	defer s.Release()
	currentTimeout(t, s) // borrows, and caches the statement in cache_statement mode

	// Measured before any statement fails: pgx deallocates a failed
	// cached statement on the next use, at the cost of a round trip.
	var got string
	if n := w.writes(func() { got = currentTimeout(t, s) }); got != chatqlSees || n != 1 {
		t.Errorf("outside a transaction: statement_timeout %s in %d writes, want %s in 1", got, n, chatqlSees)
	}
	var err error
	// BEGIN (with the timeout), the statement, COMMIT.
	if n := w.writes(func() {
		err = s.InTx(ctx, func(context.Context) error { got = currentTimeout(t, s); return nil })
	}); err != nil || got != chatqlSees || n != 3 {
		t.Errorf("in a transaction: statement_timeout %s in %d writes (%v), want %s in 3", got, n, err, chatqlSees)
	}

	_, err = s.Exec(ctx, "SELECT pg_sleep(5)")
	expectStopped(t, "Exec outside a transaction", err)
	_, err = dbpool.CollectOne(ctx, s, "SELECT pg_sleep(5)::text", nil, pgx.RowTo[string])
	expectStopped(t, "Rows outside a transaction", err)
	err = s.InTx(ctx, func(ctx context.Context) error {
		_, err := s.Exec(ctx, "SELECT pg_sleep(5)")
		return err
	})
	expectStopped(t, "in a transaction", err)

	if got := currentTimeout(t, s); got != chatqlSees {
		t.Errorf("after the timeouts: statement_timeout %s, want %s", got, chatqlSees)
	}
	if st := p.Stats(); st.Invalid != 0 || st.Opened != 1 {
		t.Errorf("the connection did not stay in service through the timeouts: %+v", st)
	}
	return pid(t, ctx, s)
}

// newPoolAt is a pool on url with cfg, closed when the test ends.
func newPoolAt(t *testing.T, url string, cfg dbpool.Config, opts ...dbpool.Option) *dbpool.Pool {
	t.Helper()
	p, err := dbpool.New(url, cfg, slog.New(slog.DiscardHandler), opts...)
	if err != nil {
		t.Fatalf("new pool: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// neighbour connects another client to url (through the pooler): the
// server connection it is given, and the statement_timeout it sees there.
func neighbour(t *testing.T, url string) (c *pgx.Conn, see func() (pid uint32, timeout string)) {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	c, err = pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatalf("another client of the pooler: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c, func() (uint32, string) {
		var pid int64
		var timeout string
		if err := c.QueryRow(t.Context(), "SELECT pg_backend_pid()::bigint, current_setting('statement_timeout')").Scan(&pid, &timeout); err != nil {
			t.Fatalf("another client of the pooler: %v", err)
		}
		return uint32(pid), timeout
	}
}

// TestStatementTimeoutDirect: connected to PostgreSQL itself, the timeout
// is a startup parameter of the connection (pg_settings says "client"),
// over the database's own default, and costs no round trip at all.
func TestStatementTimeoutDirect(t *testing.T) {
	t.Parallel()
	url, _ := databaseWithDefault(t)
	var w writeCounter
	p := newPoolAt(t, url, timeoutConfig(dbpool.PoolerNone), w.option())
	expectTimeout(t, p, &w)
	err := p.WithConn(context.Background(), func(db dbpool.DB) error {
		source, err := dbpool.CollectOne(context.Background(), db,
			"SELECT source FROM pg_settings WHERE name = 'statement_timeout'", nil, pgx.RowTo[string])
		if err == nil && source != "client" {
			t.Errorf("statement_timeout comes from %q, want client (the startup packet)", source)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestStatementTimeoutTransactionPooler: through PgBouncer in transaction
// mode, with one server connection for everyone, chatql's statements run
// with its timeout and are stopped by it, while another client of the
// pooler, given the very server connection chatql just used, sees the
// database's own timeout. A neighbour that leaves a session setting
// behind on that connection does not change chatql's.
func TestStatementTimeoutTransactionPooler(t *testing.T) {
	t.Parallel()
	url := bouncedDatabase(t, "transaction")
	var w writeCounter
	p := newPoolAt(t, url, timeoutConfig(dbpool.PoolerTransaction), w.option())
	other, see := neighbour(t, url)

	used := expectTimeout(t, p, &w)
	if pid, got := see(); pid != used || got != databaseDefault {
		t.Errorf("the other client, on backend %d after chatql on %d: statement_timeout %s, want %s", pid, used, got, databaseDefault)
	}

	if _, err := other.Exec(t.Context(), "SET statement_timeout = 0"); err != nil {
		t.Fatal(err)
	}
	expectTimeout(t, p, &w)
	if _, got := see(); got != "0" {
		t.Errorf("the other client's own session setting: statement_timeout %s, want 0", got)
	}
}

// TestStatementTimeoutSessionPooler: through PgBouncer in session mode,
// which refuses the startup parameter, chatql's statements run with its
// timeout and are stopped by it (in the default cache_statement mode), and
// the client that gets the server connection after chatql sees the
// database's own timeout.
func TestStatementTimeoutSessionPooler(t *testing.T) {
	t.Parallel()
	url := bouncedDatabase(t, "session")
	var w writeCounter
	p := newPoolAt(t, url, timeoutConfig(dbpool.PoolerSession), w.option())
	used := expectTimeout(t, p, &w)
	p.Close() // the only server connection is chatql's until then

	_, see := neighbour(t, url)
	if pid, got := see(); pid != used || got != databaseDefault {
		t.Errorf("the next client, on backend %d after chatql on %d: statement_timeout %s, want %s", pid, used, got, databaseDefault)
	}
}

// TestStatementTimeoutPoolerUndeclared: behind a pooler with DB_POOLER
// left at none, the pooler refuses the startup parameter; the pool reports
// the database unavailable and says what to set.
func TestStatementTimeoutPoolerUndeclared(t *testing.T) {
	t.Parallel()
	p := newPoolAt(t, bouncedDatabase(t, "session"), timeoutConfig(dbpool.PoolerNone))
	err := p.Ping(context.Background())
	if !errors.Is(err, dbpool.ErrUnavailable) || !strings.Contains(err.Error(), "set DB_POOLER") {
		t.Fatalf("err = %v, want ErrUnavailable saying to set DB_POOLER", err)
	}
}
