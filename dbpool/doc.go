// Package dbpool owns chatql's connections to PostgreSQL: one bounded pool
// with SQLAlchemy QueuePool semantics on top of pgxpool, the per-operation
// Scope that borrows at most one connection lazily, the helpers for background
// work, and the statistics snapshot that the health endpoint, the poolStatus
// query and metrics all report.
//
// The promise it keeps is the reason chatql exists: at no instant are there
// more than Size+MaxOverflow server connections, every borrowed connection is
// given back on every path, and a caller that cannot get a connection within
// Timeout gets ErrPoolTimeout instead of a hang.
//
// QueuePool's settings map onto pgxpool like this:
//
//   - Size + MaxOverflow is pgxpool's MaxConns: the hard cap.
//   - Size is the number of connections kept when idle: a connection given
//     back while Size are already idle is closed (AfterRelease), so after a
//     burst the idle steady state is at most Size. Connections open lazily.
//   - Timeout bounds every acquire with a deadline of its own; pgxpool has no
//     acquire timeout of its own and would otherwise wait forever.
//   - Recycle is MaxConnLifetime: pgxpool checks it when a connection is
//     acquired or released, never while it is in use.
//   - PrePing validates a pooled connection before it is handed out
//     (PrepareConn); a dead one is discarded, counted as invalid, and replaced.
//
// StatementTimeout is not a QueuePool setting: connected to PostgreSQL
// itself it is a startup parameter of each connection, and behind a
// connection pooler it is set per transaction, never on the session (see
// Pooler).
package dbpool
