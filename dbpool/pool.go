package dbpool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/puddle/v2"
)

// ErrUnavailable is matched (errors.Is) by acquire errors caused by the
// database itself: it refused or dropped the connection, or is not there.
var ErrUnavailable = errors.New("database unavailable")

// errAcquireTimeout is the cancellation cause of the deadline Acquire puts
// on pgxpool, so that our own timeout can be told apart from the caller's.
var errAcquireTimeout = errors.New("dbpool: acquire deadline")

// cancelGrace is how long a cancelled statement may take to stop before
// its connection is closed instead.
const cancelGrace = 2 * time.Second

// neverIdleOut stands in for "no idle timeout": pgxpool closes idle
// connections older than MaxConnIdleTime (zero would close all of them at
// every health check), while QueuePool keeps its Size idle connections.
const neverIdleOut = time.Duration(math.MaxInt64)

// Pool is the bounded connection pool. It is safe for concurrent use. Callers
// do not acquire connections directly: they use a Scope (one per operation)
// or WithConn/WithTx (background work), which give connections back on every
// path.
type Pool struct {
	cfg    Config
	pgx    *pgxpool.Pool
	logger *slog.Logger
	// listenerOpen says whether the reserved connection is open (Stats).
	listenerOpen func() bool
	// timeout is how statements get Config.StatementTimeout behind a
	// pooler.
	timeout statementTimeout

	// mu guards idle and fresh, which track pgx connections by identity.
	mu sync.Mutex
	// idle holds the connections admitted back to the idle list and not yet
	// acquired again; its size decides whether a returned connection is kept.
	idle map[*pgx.Conn]struct{}
	// fresh holds connections opened but not handed out yet: they were
	// validated by connecting, so pre-ping skips them.
	fresh map[*pgx.Conn]struct{}

	checkedOut  atomic.Int64
	waiting     atomic.Int64
	acquires    atomic.Int64
	timeouts    atomic.Int64
	invalid     atomic.Int64
	waitTotalNs atomic.Int64
	waitMaxNs   atomic.Int64
	lastTimeout atomic.Int64 // unix nanoseconds of the last acquire timeout
	// opened counts connections established (pgxpool's NewConnsCount also
	// counts failed attempts).
	opened atomic.Int64
	// waiters knows how long the acquires in progress have waited.
	waiters waiters
	// statements, commits and rollbacks count what scopes sent, as
	// ScopeStats.Statements does for one scope (BEGIN and the end of a
	// transaction included).
	statements atomic.Int64
	commits    atomic.Int64
	rollbacks  atomic.Int64

	observer   Observer                         // nil: none
	borrowSite func(ctx context.Context) string // nil: none

	// The slow-acquire warning is logged at most once per slowLogEvery:
	// under overload every waiter is slow, and thousands of identical
	// lines a second would bury everything else in the log. The next
	// warning says how many were left out.
	slowLogEvery   time.Duration
	slowLoggedAt   atomic.Int64 // unix nanoseconds of the last warning
	slowSuppressed atomic.Int64
}

// slowLogEvery is how often at most the slow-acquire warning is logged.
const slowLogEvery = time.Second

// Option adjusts a pool before it is created.
type Option func(*Pool, *pgxpool.Config)

// Observer receives timings as they happen, for metrics.
type Observer interface {
	// AcquireWait is called after every acquire, successful or not.
	AcquireWait(d time.Duration, err error)
	// ConnectionHeld is called when a scope gives its connection back,
	// with how long it held it.
	ConnectionHeld(d time.Duration)
	// ConnectionLeaked is called when a connection has been held longer
	// than Config.LeakThreshold.
	ConnectionLeaked()
	// Connected is called after every attempt to open a connection, with
	// how long it took (TCP, TLS, authentication and startup), successful
	// or not.
	Connected(d time.Duration, err error)
}

// WithBorrowSite describes, for leak warnings, where in the caller a
// connection is borrowed (the GraphQL layer gives the resolver path).
func WithBorrowSite(fn func(ctx context.Context) string) Option {
	return func(p *Pool, _ *pgxpool.Config) { p.borrowSite = fn }
}

// WithListener reports whether the connection Config.Reserved holds back
// (the realtime listener's) is open right now, for Stats.Listener.
func WithListener(open func() bool) Option {
	return func(p *Pool, _ *pgxpool.Config) { p.listenerOpen = open }
}

// WithObserver reports acquire waits and hold times to o.
func WithObserver(o Observer) Option {
	return func(p *Pool, _ *pgxpool.Config) { p.observer = o }
}

// WithTracer adds a query tracer (for example one that counts statements)
// beside the echo logger when DB_ECHO is on. Behind a pooler with a
// statement timeout, statements outside transactions go as batches: a
// tracer sees them only if it implements pgx.BatchTracer too.
func WithTracer(t pgx.QueryTracer) Option {
	return func(_ *Pool, c *pgxpool.Config) {
		c.ConnConfig.Tracer = combineTracers(c.ConnConfig.Tracer, t)
	}
}

// New creates the pool for connString. It does not connect: connections open
// on demand. Call Ping to check that the database is reachable.
func New(connString string, cfg Config, logger *slog.Logger, opts ...Option) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	pc, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	p := &Pool{
		cfg:    cfg,
		logger: logger,
		idle:   make(map[*pgx.Conn]struct{}),
		fresh:  make(map[*pgx.Conn]struct{}),

		slowLogEvery: slowLogEvery,
	}

	pc.MaxConns = int32(cfg.MaxConnections() - cfg.Reserved)
	pc.MinConns = 0
	pc.MinIdleConns = 0
	pc.MaxConnLifetime = max(cfg.Recycle, 0)
	pc.MaxConnLifetimeJitter = 0
	pc.MaxConnIdleTime = neverIdleOut
	if cfg.ApplicationName != "" {
		pc.ConnConfig.RuntimeParams["application_name"] = cfg.ApplicationName
	}
	p.timeout = applyStatementTimeout(pc, cfg)
	if cfg.QueryExecMode != 0 {
		pc.ConnConfig.DefaultQueryExecMode = cfg.QueryExecMode
	}
	// A statement whose caller gives up (a client that hung up) is
	// cancelled on the server rather than by closing the connection, which
	// pgx does by default: the connection stays good and goes back to the
	// pool, instead of costing a new one. If the cancel does not take
	// effect in time, the connection is closed after all.
	pc.ConnConfig.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: cancelGrace}
	}
	if cfg.Echo {
		pc.ConnConfig.Tracer = echoTracer(logger, cfg.EchoParameters)
	}
	// Pre-ping is done in PrepareConn rather than pgxpool's own ShouldPing,
	// because only there can a failed ping be counted as invalid.
	pc.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return false }
	pc.AfterConnect = p.afterConnect
	pc.PrepareConn = p.prepareConn
	pc.AfterRelease = p.afterRelease
	pc.BeforeClose = p.beforeClose
	for _, opt := range opts {
		opt(p, pc)
	}
	if p.observer != nil {
		pc.ConnConfig.Tracer = combineTracers(pc.ConnConfig.Tracer, connectTimer{p.observer})
	}

	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("create pool: %w", err)
	}
	p.pgx = pool
	return p, nil
}

// Config returns the settings the pool was created with.
func (p *Pool) Config() Config { return p.cfg }

// Close closes every connection. It blocks until all borrowed connections
// are given back, so call it after in-flight work has finished.
func (p *Pool) Close() { p.pgx.Close() }

// Ping borrows a connection, runs a trivial statement and gives it back.
func (p *Pool) Ping(ctx context.Context) error {
	return p.WithConn(ctx, func(db DB) error {
		_, err := db.Exec(ctx, "SELECT 1")
		return err
	})
}

func (p *Pool) afterConnect(_ context.Context, c *pgx.Conn) error {
	p.opened.Add(1)
	p.mu.Lock()
	p.fresh[c] = struct{}{}
	p.mu.Unlock()
	return nil
}

// prepareConn runs on every acquire, for new and idle connections alike.
func (p *Pool) prepareConn(ctx context.Context, c *pgx.Conn) (bool, error) {
	p.mu.Lock()
	delete(p.idle, c)
	_, isFresh := p.fresh[c]
	delete(p.fresh, c)
	p.mu.Unlock()
	if !p.cfg.PrePing || isFresh {
		return true, nil
	}
	if err := c.Ping(ctx); err != nil {
		if ctx.Err() != nil {
			// The caller gave up while we pinged: not the connection's
			// fault. (true, err) gives it back rather than destroy it; one
			// the interrupted ping left unusable is destroyed on release.
			// pgxpool puts it straight back on the idle list, so it is
			// idle again for the shrinking policy too.
			p.mu.Lock()
			p.idle[c] = struct{}{}
			p.mu.Unlock()
			return true, ctx.Err()
		}
		p.invalid.Add(1)
		p.logger.Debug("discarding invalid connection", "pid", c.PgConn().PID(), "err", err)
		return false, nil // destroy it and let pgxpool try the next one
	}
	return true, nil
}

// afterRelease decides whether a returned connection is kept: only while
// fewer than Size connections are idle, which gives QueuePool's shrinking.
// pgxpool runs it in a goroutine of its own.
func (p *Pool) afterRelease(c *pgx.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if size, _ := p.cfg.Lendable(); len(p.idle) >= size {
		return false
	}
	p.idle[c] = struct{}{}
	return true
}

func (p *Pool) beforeClose(c *pgx.Conn) {
	p.mu.Lock()
	delete(p.idle, c)
	delete(p.fresh, c)
	p.mu.Unlock()
}

// acquire borrows a connection, waiting at most Config.Timeout. It returns
// how long it waited. Errors are classified: *TimeoutError (ErrPoolTimeout)
// for our timeout, the caller's own context error for cancellation,
// ErrUnavailable for a database that cannot be reached, ErrClosed for a
// closed pool.
func (p *Pool) acquire(ctx context.Context) (*pgxpool.Conn, time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("acquire connection: %w", err)
	}
	start, waiter := p.waiters.add()
	p.waiting.Add(1)
	actx, cancel := context.WithTimeoutCause(ctx, p.cfg.Timeout, errAcquireTimeout)
	conn, err := p.pgx.Acquire(actx)
	for retry := 0; err != nil && retry < len(clientCapBackoff) && isClientCapRefusal(err); retry++ {
		// A pooler sized exactly at the budget refuses the connection that
		// replaces an overflow connection we closed a moment ago, while it
		// has not yet seen the close. That clears within milliseconds: try
		// again briefly, then report the refusal.
		t := time.NewTimer(clientCapBackoff[retry])
		select {
		case <-t.C:
			conn, err = p.pgx.Acquire(actx)
		case <-actx.Done():
			t.Stop()
		}
	}
	timedOut := errors.Is(context.Cause(actx), errAcquireTimeout)
	cancel()
	p.waiting.Add(-1)
	p.waiters.done(waiter)
	wait := time.Since(start)

	if err != nil {
		err = p.acquireError(ctx, err, timedOut)
	}
	if p.observer != nil {
		p.observer.AcquireWait(wait, err)
	}
	if p.cfg.SlowAcquire > 0 && wait > p.cfg.SlowAcquire {
		p.warnSlow(wait, err)
	}
	if err != nil {
		return nil, wait, err
	}
	p.checkedOut.Add(1)
	p.acquires.Add(1)
	p.waitTotalNs.Add(int64(wait))
	for {
		old := p.waitMaxNs.Load()
		if int64(wait) <= old || p.waitMaxNs.CompareAndSwap(old, int64(wait)) {
			break
		}
	}
	return conn, wait, nil
}

// warnSlow logs a slow acquire with the counts HikariCP puts in its
// timeout message, unless another was logged less than slowLogEvery ago;
// suppressed says how many slow acquires since the last line were not
// logged.
func (p *Pool) warnSlow(wait time.Duration, err error) {
	now := time.Now().UnixNano()
	last := p.slowLoggedAt.Load()
	if now-last < int64(p.slowLogEvery) || !p.slowLoggedAt.CompareAndSwap(last, now) {
		p.slowSuppressed.Add(1)
		return
	}
	s := p.Stats()
	p.logger.Warn("slow connection acquire", "waited", wait.Round(time.Millisecond), "err", err,
		"total", s.Total, "active", s.CheckedOut, "idle", s.CheckedIn, "waiting", s.Waiting,
		"max_connections", s.MaxConnections, "suppressed", p.slowSuppressed.Swap(0))
}

// clientCapBackoff is how long acquire waits before each new try after a
// pooler or server refused a connection for its client limit: about 0.75 s
// in all, well under any sensible pool timeout.
var clientCapBackoff = []time.Duration{10 * time.Millisecond, 40 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}

// isClientCapRefusal reports a connection refused because the server or
// the pooler in front of it has as many clients as it allows: PostgreSQL's
// too_many_connections (53300), PgBouncer's "no more connections allowed"
// and Supabase's MaxClientsInSessionMode.
func isClientCapRefusal(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	return pgErr.Code == "53300" ||
		strings.Contains(pgErr.Message, "no more connections allowed") ||
		strings.Contains(pgErr.Message, "max clients reached")
}

func (p *Pool) acquireError(ctx context.Context, err error, timedOut bool) error {
	var connectErr *pgconn.ConnectError
	switch {
	case errors.Is(err, puddle.ErrClosedPool):
		return ErrClosed
	case ctx.Err() != nil:
		return fmt.Errorf("acquire connection: %w", context.Cause(ctx))
	case errors.As(err, &connectErr):
		return fmt.Errorf("%w: %w", ErrUnavailable, poolerHint(err))
	case timedOut:
		p.timeouts.Add(1)
		p.lastTimeout.Store(time.Now().UnixNano())
		size, overflow := p.cfg.Lendable()
		return &TimeoutError{Size: size, MaxOverflow: overflow, Timeout: p.cfg.Timeout}
	default:
		return fmt.Errorf("%w: acquire connection: %w", ErrUnavailable, err)
	}
}

// release gives a connection back. pgxpool destroys it if it is broken, in a
// transaction or expired; a broken one is counted as invalid.
func (p *Pool) release(c *pgxpool.Conn) {
	if c.Conn().IsClosed() {
		p.invalid.Add(1)
	}
	p.checkedOut.Add(-1)
	c.Release()
}

// connectTimer reports how long opening each connection took. It traces
// nothing else.
type connectTimer struct{ observer Observer }

type connectStartKey struct{}

func (t connectTimer) TraceConnectStart(ctx context.Context, _ pgx.TraceConnectStartData) context.Context {
	return context.WithValue(ctx, connectStartKey{}, time.Now())
}

func (t connectTimer) TraceConnectEnd(ctx context.Context, data pgx.TraceConnectEndData) {
	if start, ok := ctx.Value(connectStartKey{}).(time.Time); ok {
		t.observer.Connected(time.Since(start), data.Err)
	}
}

func (connectTimer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}

func (connectTimer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
