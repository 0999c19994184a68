package dbpool

import (
	"errors"
	"fmt"
	"time"
)

// ErrPoolTimeout is matched (errors.Is) by the error an acquire returns when
// no connection became free within Config.Timeout. The concrete error is a
// *TimeoutError that names the limits, like QueuePool's message.
var ErrPoolTimeout = errors.New("connection pool timeout")

// ErrScopeReleased is returned by a Scope used after Release.
var ErrScopeReleased = errors.New("dbpool: scope already released")

// ErrClosed is returned by an acquire on a closed pool.
var ErrClosed = errors.New("dbpool: pool closed")

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
