package dbpool

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// statementTimeout is how Config.StatementTimeout reaches the server behind
// a pooler (see Pooler); both fields are empty when it travels as a startup
// parameter instead, or when there is no timeout.
type statementTimeout struct {
	// begin begins a transaction and sets the timeout until its end, in
	// one simple-protocol message: one round trip, like a bare BEGIN.
	begin string
	// local is sent in the same batch before every statement run outside
	// a transaction. set_config rather than SET LOCAL: the extended
	// protocol runs the batch as one implicit transaction, in which SET
	// LOCAL works but has the server log a WARNING every time.
	local string
}

// applyStatementTimeout arranges for cfg.StatementTimeout to reach the
// server: as a startup parameter of every connection directly, or else
// per transaction through what it returns.
func applyStatementTimeout(pc *pgxpool.Config, cfg Config) statementTimeout {
	if cfg.StatementTimeout <= 0 {
		return statementTimeout{}
	}
	ms := strconv.FormatInt(millisecondsUp(cfg.StatementTimeout), 10)
	if cfg.Pooler == PoolerNone {
		pc.ConnConfig.RuntimeParams["statement_timeout"] = ms
		return statementTimeout{}
	}
	return statementTimeout{
		begin: "BEGIN; SET LOCAL statement_timeout = " + ms,
		local: "SELECT set_config('statement_timeout', '" + ms + "', true)",
	}
}

// millisecondsUp is d in whole milliseconds, rounded up: statement_timeout
// counts milliseconds, and a positive timeout must not become 0 (none).
func millisecondsUp(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// beginOptions are the options of the transactions the pool begins.
func (t statementTimeout) beginOptions() pgx.TxOptions {
	return pgx.TxOptions{BeginQuery: t.begin} // "" is pgx's own BEGIN
}

// on returns what a statement outside a transaction runs on: c itself, or
// c with the timeout sent along with every statement.
func (t statementTimeout) on(c *pgxpool.Conn) DB {
	if t.local == "" {
		return conn{c}
	}
	return localTimeout{c: c, set: t.local}
}

// localTimeout runs each statement in a batch after set, which sets the
// statement timeout for the batch's implicit transaction only: one round
// trip, and nothing left on the server connection afterwards. A tracer sees
// these statements as batches (pgx.BatchTracer), not as queries. Arguments
// may begin with a pgx.QueryRewriter (pgx.NamedArgs), not with a
// pgx.QueryExecMode, which batches do not take.
type localTimeout struct {
	c   *pgxpool.Conn
	set string
}

func (l localTimeout) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	var tag pgconn.CommandTag
	err := l.send(ctx, sql, args, func(br pgx.BatchResults) error {
		var err error
		tag, err = br.Exec()
		return err
	})
	return tag, err
}

func (l localTimeout) Rows(ctx context.Context, sql string, args []any, read func(pgx.Rows) error) error {
	return l.send(ctx, sql, args, func(br pgx.BatchResults) error {
		rows, err := br.Query()
		if err != nil {
			return err
		}
		return readAll(rows, read)
	})
}

// send queues set and the statement, and hands the statement's result to
// result. The first error is returned; closing the batch after an error
// only reports it again.
func (l localTimeout) send(ctx context.Context, sql string, args []any, result func(pgx.BatchResults) error) error {
	b := &pgx.Batch{}
	b.Queue(l.set)
	b.Queue(sql, args...)
	br := l.c.SendBatch(ctx, b)
	_, err := br.Exec()
	if err == nil {
		err = result(br)
	}
	if err != nil {
		_ = br.Close()
		return err
	}
	return br.Close()
}

// poolerHint adds the fix to the error of a connection refused for its
// statement_timeout startup parameter: DATABASE_URL leads to a pooler, and
// DB_POOLER does not say so.
func poolerHint(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && strings.Contains(pgErr.Message, "startup parameter") && strings.Contains(pgErr.Message, "statement_timeout") {
		return fmt.Errorf("%w (the database URL leads to a connection pooler, which refuses statement_timeout at connect: set DB_POOLER to its pool mode, session or transaction)", err)
	}
	return err
}
