package dbpool

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrPoolTimeout is matched (errors.Is) by the error an acquire returns when
// no connection became free within Config.Timeout. The concrete error is a
// *TimeoutError that names the limits, like QueuePool's message.
var ErrPoolTimeout = errors.New("connection pool timeout")

// ErrRolledBack is returned (wrapped) by a commit whose transaction Release
// already rolled back: the write did not happen.
var ErrRolledBack = errors.New("dbpool: transaction rolled back by release")

// ErrScopeReleased is returned by a Scope used after Release.
var ErrScopeReleased = errors.New("dbpool: scope already released")

// ErrClosed is returned by an acquire on a closed pool.
var ErrClosed = errors.New("dbpool: pool closed")

// ErrTooManyStatements is matched (errors.Is) by the error of a statement
// that a scope refused because its unit of work had already run
// Config.MaxStatements. The concrete error is a *StatementBudgetError
// that names the budget.
var ErrTooManyStatements = errors.New("statement budget exceeded")

// StatementBudgetError is the error of a statement past the budget of its
// scope's unit of work; the statement was not sent.
type StatementBudgetError struct {
	Max int
}

func (e *StatementBudgetError) Error() string {
	return fmt.Sprintf("statement budget of %d per unit of work exceeded (DB_MAX_STATEMENTS); statement not sent", e.Max)
}

// Is makes errors.Is(err, ErrTooManyStatements) true.
func (e *StatementBudgetError) Is(target error) bool { return target == ErrTooManyStatements }

// TimeoutError is the error of an acquire that hit Config.Timeout.
type TimeoutError struct {
	Size, MaxOverflow int
	Timeout           time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("connection pool limit of size %d overflow %d reached, connection timed out, timeout %.2fs",
		e.Size, e.MaxOverflow, e.Timeout.Seconds())
}

// Is makes errors.Is(err, ErrPoolTimeout) true.
func (e *TimeoutError) Is(target error) bool { return target == ErrPoolTimeout }

// IsConnectionLost reports an error caused by the connection itself rather
// than by the statement: the backend was terminated or the server shut down
// (SQLSTATE 57P01-57P03, class 08), or the socket broke or was closed.
// Such a connection is discarded when returned; the next acquire gets a
// fresh one.
func IsConnectionLost(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03"
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, pgconn.ErrConnClosed)
}
