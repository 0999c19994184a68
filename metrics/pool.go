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
	descCheckedOut = prometheus.NewDesc("chatql_db_connections_checked_out", "Connections borrowed right now.", nil, nil)
	descIdle       = prometheus.NewDesc("chatql_db_connections_idle", "Idle connections.", nil, nil)
	descTotal      = prometheus.NewDesc("chatql_db_connections_total", "Open connections, including ones being opened.", nil, nil)
	descMax        = prometheus.NewDesc("chatql_db_connections_max", "The budget: DB_POOL_SIZE + DB_MAX_OVERFLOW, for the pool and the listener together.", nil, nil)
	descListener   = prometheus.NewDesc("chatql_db_listener_connections", "1 while the realtime listener holds a connection of the same budget, else 0.", nil, nil)
	descWaiting    = prometheus.NewDesc("chatql_db_acquires_waiting", "Acquires in progress right now.", nil, nil)
	descAcquires   = prometheus.NewDesc("chatql_db_acquires_total", "Connections handed out.", nil, nil)
	descTimeouts   = prometheus.NewDesc("chatql_db_acquire_timeouts_total", "Acquires that hit DB_POOL_TIMEOUT.", nil, nil)
	descInvalid    = prometheus.NewDesc("chatql_db_invalid_connections_total", "Connections discarded because they were found broken.", nil, nil)
	descRecycled   = prometheus.NewDesc("chatql_db_recycled_connections_total", "Connections replaced because they reached DB_POOL_RECYCLE.", nil, nil)
	descOpened     = prometheus.NewDesc("chatql_db_connections_opened_total", "Connections opened.", nil, nil)
)

func (poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCheckedOut, descIdle, descTotal, descMax, descListener, descWaiting,
		descAcquires, descTimeouts, descInvalid, descRecycled, descOpened} {
		ch <- d
	}
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stats()
	gauge := func(d *prometheus.Desc, v int) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	counter := func(d *prometheus.Desc, v int) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(descCheckedOut, s.CheckedOut)
	gauge(descIdle, s.CheckedIn)
	gauge(descTotal, s.Total)
	gauge(descMax, s.MaxConnections)
	gauge(descListener, s.Listener)
	gauge(descWaiting, s.Waiting)
	counter(descAcquires, s.AcquireCount)
	counter(descTimeouts, s.Timeouts)
	counter(descInvalid, s.Invalid)
	counter(descRecycled, s.Recycled)
	counter(descOpened, s.Opened)
}
