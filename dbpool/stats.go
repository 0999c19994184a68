package dbpool

import "time"

// exhaustedFor is how long after an acquire timeout the status stays
// "exhausted", so that a monitor polling now and then still sees it.
const exhaustedFor = 60 * time.Second

// Status words of a Stats snapshot.
const (
	StatusOK        = "ok"        // nobody is waiting for a connection
	StatusBusy      = "busy"      // at least one acquire is waiting right now
	StatusExhausted = "exhausted" // an acquire timed out in the last 60 s
)

// Stats is the one snapshot of the pool that every report uses: the health
// endpoint encodes it as JSON with these snake_case keys, the poolStatus
// query and the metrics read the same fields. Taking one never touches a
// connection.
type Stats struct {
	Status         string `json:"status"`
	PoolSize       int    `json:"pool_size"`
	MaxOverflow    int    `json:"max_overflow"`
	MaxConnections int    `json:"max_connections"`
	// CheckedOut counts connections borrowed by callers right now.
	CheckedOut int `json:"checked_out"`
	// CheckedIn counts idle connections.
	CheckedIn int `json:"checked_in"`
	// Total counts open connections, including ones being opened.
	Total int `json:"total"`
	// Overflow counts open connections beyond PoolSize (never negative).
	Overflow int `json:"overflow"`
	// Invalid counts connections discarded because they were found broken.
	Invalid int `json:"invalid"`
	// Waiting counts acquires in progress right now.
	Waiting      int `json:"waiting"`
	AcquireCount int `json:"acquire_count"`
	// Timeouts counts acquires that hit the pool timeout.
	Timeouts         int     `json:"timeouts"`
	AvgAcquireWaitMs float64 `json:"avg_acquire_wait_ms"`
	MaxAcquireWaitMs float64 `json:"max_acquire_wait_ms"`
	// Recycled counts connections closed because they reached the recycle age.
	Recycled int `json:"recycled"`
	// Opened counts connections opened since start: churn shows here.
	Opened int `json:"opened"`
	// Listener is 1 while the realtime listener holds a connection to the
	// same endpoint (Config.Reserved), else 0: Total + Listener never
	// exceeds MaxConnections, and is what pg_stat_activity shows of this
	// process.
	Listener int `json:"listener"`
	// OldestWaitMs is how long the longest-waiting acquire in progress has
	// waited so far, 0 when none is waiting.
	OldestWaitMs float64 `json:"oldest_wait_ms"`
	// Statements counts statements sent through scopes since start, BEGIN,
	// COMMIT and ROLLBACK included (pre-pings and the statement timeout's
	// set_config are not).
	Statements int `json:"statements"`
	// Commits and Rollbacks count transactions ended since start; a
	// failed COMMIT counts as a rollback.
	Commits   int `json:"commits"`
	Rollbacks int `json:"rollbacks"`
}

// Stats returns a snapshot of the pool. It is cheap and never blocks on a
// connection, so it answers even while the pool is exhausted.
func (p *Pool) Stats() Stats {
	ps := p.pgx.Stat()
	s := Stats{
		PoolSize:         p.cfg.Size,
		MaxOverflow:      p.cfg.MaxOverflow,
		MaxConnections:   p.cfg.MaxConnections(),
		CheckedOut:       int(p.checkedOut.Load()),
		CheckedIn:        int(ps.IdleConns()),
		Total:            int(ps.TotalConns()),
		Invalid:          int(p.invalid.Load()),
		Waiting:          int(p.waiting.Load()),
		AcquireCount:     int(p.acquires.Load()),
		Timeouts:         int(p.timeouts.Load()),
		MaxAcquireWaitMs: float64(p.waitMaxNs.Load()) / float64(time.Millisecond),
		Recycled:         int(ps.MaxLifetimeDestroyCount()),
		Opened:           int(p.opened.Load()),
		OldestWaitMs:     float64(p.waiters.oldest()) / float64(time.Millisecond),
		Statements:       int(p.statements.Load()),
		Commits:          int(p.commits.Load()),
		Rollbacks:        int(p.rollbacks.Load()),
	}
	s.Overflow = max(s.Total-s.PoolSize, 0)
	if p.cfg.Reserved > 0 && p.listenerOpen != nil && p.listenerOpen() {
		s.Listener = 1
	}
	if s.AcquireCount > 0 {
		s.AvgAcquireWaitMs = float64(p.waitTotalNs.Load()) / float64(s.AcquireCount) / float64(time.Millisecond)
	}
	switch last := p.lastTimeout.Load(); {
	case last != 0 && time.Since(time.Unix(0, last)) < exhaustedFor:
		s.Status = StatusExhausted
	case s.Waiting > 0:
		s.Status = StatusBusy
	default:
		s.Status = StatusOK
	}
	return s
}
