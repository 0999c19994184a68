package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"chatql/dbpool"
)

// poolCollector turns one dbpool snapshot per scrape into gauges and
// counters, so the numbers agree with /health/db-pool and nothing polls.
type poolCollector struct {
	pool *dbpool.Pool
}

var (
	descPoolSize     = prometheus.NewDesc("chatql_db_pool_size", "DB_POOL_SIZE: connections kept open once opened.", nil, nil)
	descPoolOverflow = prometheus.NewDesc("chatql_db_pool_max_overflow", "DB_MAX_OVERFLOW: connections opened beyond DB_POOL_SIZE under load and closed when given back.", nil, nil)
	descMax          = prometheus.NewDesc("chatql_db_connections_max", "The budget: DB_POOL_SIZE + DB_MAX_OVERFLOW, for the pool and the listener together.", nil, nil)
	descCheckedOut   = prometheus.NewDesc("chatql_db_connections_checked_out", "Connections borrowed right now.", nil, nil)
	descIdle         = prometheus.NewDesc("chatql_db_connections_idle", "Idle connections.", nil, nil)
	descOpen         = prometheus.NewDesc("chatql_db_connections_open", "Open connections, including ones being opened.", nil, nil)
	descListener     = prometheus.NewDesc("chatql_db_listener_connections", "1 while the realtime listener holds a connection of the same budget, else 0.", nil, nil)
	descWaiting      = prometheus.NewDesc("chatql_db_acquires_waiting", "Acquires in progress right now.", nil, nil)
	descOldestWait   = prometheus.NewDesc("chatql_db_acquire_oldest_wait_seconds", "How long the longest-waiting acquire in progress has waited so far; 0 when none is waiting.", nil, nil)
	descAcquires     = prometheus.NewDesc("chatql_db_acquires_total", "Connections handed out.", nil, nil)
	descTimeouts     = prometheus.NewDesc("chatql_db_acquire_timeouts_total", "Acquires that hit DB_POOL_TIMEOUT.", nil, nil)
	descInvalid      = prometheus.NewDesc("chatql_db_invalid_connections_total", "Connections discarded because they were found broken.", nil, nil)
	descRecycled     = prometheus.NewDesc("chatql_db_recycled_connections_total", "Connections replaced because they reached DB_POOL_RECYCLE.", nil, nil)
	descOpened       = prometheus.NewDesc("chatql_db_connections_opened_total", "Connections opened.", nil, nil)
	descStatements   = prometheus.NewDesc("chatql_db_statements_total", "Statements sent through the pool, BEGIN, COMMIT and ROLLBACK included.", nil, nil)
	descTransactions = prometheus.NewDesc("chatql_db_transactions_total", "Transactions ended, by outcome (commit, or rollback: a failed COMMIT counts as one).", []string{"outcome"}, nil)
)

func (poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPoolSize, descPoolOverflow, descMax, descCheckedOut, descIdle, descOpen,
		descListener, descWaiting, descOldestWait, descAcquires, descTimeouts, descInvalid, descRecycled, descOpened,
		descStatements, descTransactions} {
		ch <- d
	}
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stats()
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descPoolSize, float64(s.PoolSize))
	gauge(descPoolOverflow, float64(s.MaxOverflow))
	gauge(descMax, float64(s.MaxConnections))
	gauge(descCheckedOut, float64(s.CheckedOut))
	gauge(descIdle, float64(s.CheckedIn))
	gauge(descOpen, float64(s.Total))
	gauge(descListener, float64(s.Listener))
	gauge(descWaiting, float64(s.Waiting))
	gauge(descOldestWait, s.OldestWaitMs/1000)
	counter(descAcquires, s.AcquireCount)
	counter(descTimeouts, s.Timeouts)
	counter(descInvalid, s.Invalid)
	counter(descRecycled, s.Recycled)
	counter(descOpened, s.Opened)
	counter(descStatements, s.Statements)
	counter(descTransactions, s.Commits, "commit")
	counter(descTransactions, s.Rollbacks, "rollback")
}
