// Package localpg runs a private PostgreSQL cluster for development and tests,
// so that chatql works on a fresh machine with no database configured.
//
// A cluster is one data directory plus the server that runs on it. Open finds
// the PostgreSQL binaries (FindBinaries), creates the data directory with
// initdb on first use and never starts anything; Start, Stop and Restart drive
// the server through pg_ctl. Nothing here is meant for production: the server
// listens only on 127.0.0.1, has no unix socket, and has one superuser,
// "postgres", whose random password is generated at initdb time.
//
// Files, for a data directory Dir:
//
//   - Dir itself holds the cluster and nothing else (initdb wants an empty
//     directory, and Postgres wants it mode 0700).
//   - Dir + ".password", next to it, holds the superuser password (mode 0600).
//     Open reads it back on every later run; deleting it orphans the cluster,
//     so delete both or neither.
//   - Dir + ".log", next to it, is the server log. pg_ctl appends to it, so
//     the tail is always the latest run; a failed Start quotes that tail.
//
// Running as root: Postgres refuses to, so initdb and pg_ctl run as the
// "postgres" user (or "nobody" when there is none), which then owns the three
// paths above. Every directory above Dir must be traversable by that user;
// Open says which one is not.
//
// A server outlives a process that is killed (it runs in its own process
// group, so a Ctrl-C meant for chatql does not reach it either). The next
// Start notices the orphan through Dir/postmaster.pid and stops it before
// starting afresh, and removes a postmaster.pid whose process is gone.
package localpg
