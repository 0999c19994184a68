package dbpool

import (
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Config holds the pool settings. The names and meanings are SQLAlchemy
// QueuePool's, because that is the vocabulary operators arrive with.
type Config struct {
	// Size is the number of connections kept open when idle (≥ 1).
	Size int
	// MaxOverflow is the number of extra connections allowed under load,
	// closed again when returned (≥ 0).
	MaxOverflow int
	// Timeout is how long an acquire waits for a connection before failing
	// with ErrPoolTimeout (> 0).
	Timeout time.Duration
	// Recycle is the age after which a connection is closed and replaced the
	// next time it is acquired or returned; 0 or negative disables it.
	Recycle time.Duration
	// PrePing validates a pooled connection before handing it out.
	PrePing bool
	// Echo logs every SQL statement (text, duration, rows) at info level.
	Echo bool
	// EchoParameters adds the statements' arguments to the Echo log; they
	// include password hashes and message bodies, so it is off by default.
	EchoParameters bool
	// ApplicationName is sent to the server, so that this pool's connections
	// can be counted in pg_stat_activity.
	ApplicationName string
	// QueryExecMode is how pgx sends statements. The default caches
	// prepared statements per connection; behind a transaction-mode pooler
	// (Supabase port 6543, PgBouncer pool_mode=transaction) use
	// QueryExecModeExec, because prepared statements do not survive the
	// pooler switching server connections between transactions.
	QueryExecMode pgx.QueryExecMode
	// SlowAcquire: an acquire that waits longer is logged as a warning with
	// the pool's counts, at most once a second (the next warning counts
	// those left out); 0 turns the warning off.
	SlowAcquire time.Duration
	// Reserved counts connections to the same endpoint that the process
	// holds outside the pool (the realtime listener), within the same
	// budget: the pool opens at most MaxConnections() - Reserved. A
	// reservation displaces overflow first, then size (Lendable).
	Reserved int
	// StatementTimeout is the statement_timeout of every statement the
	// pool runs, so that a runaway query cannot hold a connection forever;
	// 0 means none. How it reaches the server depends on Pooler.
	StatementTimeout time.Duration
	// Pooler says what the pool connects to: PostgreSQL itself or a
	// connection pooler, which decides how StatementTimeout is applied.
	Pooler Pooler
	// LeakThreshold: a connection held longer by one scope is reported
	// once as a possible leak (HikariCP's leakDetectionThreshold); 0 off.
	LeakThreshold time.Duration
	// MaxStatements is the statement budget of one unit of work of a
	// Scope: one GraphQL operation, or one event of a subscription
	// (NextUnit starts the next). Past it a statement is not sent and
	// fails with ErrTooManyStatements, so that a client cannot make one
	// operation hold a connection for thousands of statements (alias
	// fan-out). Only statements run for the caller count: transaction
	// control, pre-ping and the statement timeout's session setup do
	// not. WithConn and WithTx, whose work is the server's own, have no
	// budget. 0 means no budget (DB_MAX_STATEMENTS refuses it).
	MaxStatements int
}

// QueryExecMode returns the pgx mode a DB_QUERY_EXEC_MODE value names
// (cache_statement, cache_describe, exec, simple_protocol), and false for
// any other.
func QueryExecMode(name string) (pgx.QueryExecMode, bool) {
	switch name {
	case "cache_statement":
		return pgx.QueryExecModeCacheStatement, true
	case "cache_describe":
		return pgx.QueryExecModeCacheDescribe, true
	case "exec":
		return pgx.QueryExecModeExec, true
	case "simple_protocol":
		return pgx.QueryExecModeSimpleProtocol, true
	}
	return 0, false
}

// Pooler is what stands between the pool and PostgreSQL (DB_POOLER).
//
// Directly, StatementTimeout is a startup parameter of each connection: it
// costs nothing and lives exactly as long as the connection, which is
// the pool's alone. A pooler refuses that startup parameter (PgBouncer:
// "unsupported startup parameter", or silently drops it when
// ignore_startup_parameters lists it), and a session-level SET would stay
// on the server connection after chatql is done with it: in transaction
// mode the next client of the pooler gets it. So behind any pooler chatql
// leaves the session alone and sets the timeout for one transaction at a
// time, in the same round trip as the transaction's first statement: a
// transaction begins with "BEGIN; SET LOCAL statement_timeout = ...", and
// a statement outside one goes in a batch after
// set_config('statement_timeout', ..., true), which the server runs as one
// implicit transaction. Either way the setting ends with the transaction.
type Pooler int

const (
	// PoolerNone: the pool connects to PostgreSQL itself.
	PoolerNone Pooler = iota
	// PoolerSession: a session-mode pooler, which lends a server
	// connection for as long as the client stays connected (PgBouncer
	// pool_mode=session, Supabase's pooler on port 5432).
	PoolerSession
	// PoolerTransaction: a transaction-mode pooler, which lends a server
	// connection for one transaction at a time (PgBouncer
	// pool_mode=transaction, Supabase's pooler on port 6543).
	PoolerTransaction
)

var poolerNames = [...]string{PoolerNone: "none", PoolerSession: "session", PoolerTransaction: "transaction"}

// String returns the DB_POOLER value that names p.
func (p Pooler) String() string {
	if p < 0 || int(p) >= len(poolerNames) {
		return fmt.Sprintf("Pooler(%d)", int(p))
	}
	return poolerNames[p]
}

// ParsePooler returns the Pooler a DB_POOLER value names (none, session,
// transaction), and false for any other.
func ParsePooler(name string) (Pooler, bool) {
	for p, n := range poolerNames {
		if n == name {
			return Pooler(p), true
		}
	}
	return 0, false
}

// DefaultMaxStatements is far above what chatql's own queries need (the
// Inbox runs 6 statements, a mutation 2 to 4) and far below what an
// operation holding a connection for long would run.
const DefaultMaxStatements = 50

// DefaultConfig returns QueuePool's defaults (size 5, overflow 10, timeout
// 30 s) with a one-hour recycle and pre-ping on.
func DefaultConfig() Config {
	return Config{
		Size:            5,
		MaxOverflow:     10,
		Timeout:         30 * time.Second,
		Recycle:         time.Hour,
		PrePing:         true,
		ApplicationName: "chatql",
		QueryExecMode:   pgx.QueryExecModeCacheStatement,
		SlowAcquire:     time.Second,
		LeakThreshold:   30 * time.Second,
		MaxStatements:   DefaultMaxStatements,
	}
}

// MaxConnections is the budget, the hard cap on connections to the
// endpoint: Size + MaxOverflow, shared by the pool and Reserved.
func (c Config) MaxConnections() int { return c.Size + c.MaxOverflow }

// Lendable is what the pool itself may use of the budget once Reserved is
// taken out: overflow goes first, then size, so a reservation costs
// burst capacity before it costs connections kept open.
func (c Config) Lendable() (size, overflow int) {
	overflow = c.MaxOverflow - c.Reserved
	size = c.Size + min(overflow, 0)
	return size, max(overflow, 0)
}

// Validate reports the first setting that is out of range.
func (c Config) Validate() error {
	switch {
	case c.Size < 1:
		return fmt.Errorf("pool size %d: must be at least 1", c.Size)
	case c.MaxOverflow < 0:
		return fmt.Errorf("max overflow %d: must not be negative", c.MaxOverflow)
	case c.Timeout <= 0:
		return fmt.Errorf("pool timeout %s: must be positive", c.Timeout)
	case c.MaxConnections() > 1<<20:
		return fmt.Errorf("pool size %d + overflow %d: too large", c.Size, c.MaxOverflow)
	case c.Reserved < 0:
		return fmt.Errorf("reserved %d: must not be negative", c.Reserved)
	case c.MaxStatements < 0:
		return fmt.Errorf("max statements %d: must not be negative", c.MaxStatements)
	case c.Pooler < PoolerNone || c.Pooler > PoolerTransaction:
		return fmt.Errorf("pooler %d: unknown", int(c.Pooler))
	case c.MaxConnections()-c.Reserved < 1:
		return fmt.Errorf("pool size %d + overflow %d leaves no connection beside the %d held outside the pool", c.Size, c.MaxOverflow, c.Reserved)
	}
	return nil
}
