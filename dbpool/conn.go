package dbpool

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Conn runs a DB's functions on a connection of the caller's own, outside
// the pool: the realtime listener's, which must keep its session. It
// serves one statement at a time, like the connection itself.
func Conn(c *pgx.Conn) DB { return conn{c} }

// querier is what pgx.Conn, pgxpool.Conn and pgx.Tx have in common.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// conn runs a DB's functions on a querier.
type conn struct{ q querier }

func (c conn) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return c.q.Exec(ctx, sql, args...)
}

func (c conn) Rows(ctx context.Context, sql string, args []any, read func(pgx.Rows) error) error {
	rows, err := c.q.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	return readAll(rows, read)
}
