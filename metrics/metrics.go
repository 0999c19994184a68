// Package metrics exposes chatql to Prometheus: the pool snapshot read at
// scrape time (no polling goroutine), histograms of acquire waits,
// connection hold times and GraphQL operations, and the Go runtime and
// process collectors. Every name starts with chatql_.
package metrics

import (
	"crypto/subtle"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"chatql/dbpool"
)

// Metrics is one registry and the instruments chatql records into.
type Metrics struct {
	registry    *prometheus.Registry
	acquireWait prometheus.Histogram
	hold        prometheus.Histogram
	operations  *prometheus.HistogramVec
	leaks       prometheus.Counter
	admission   admissionMetrics
	connect     prometheus.Histogram
}

// waitBuckets span a free connection (microseconds) to a pool timeout.
var waitBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// New returns a registry with chatql's own metrics and the Go runtime and
// process collectors; WatchPool, WatchHub and WatchStreams add the
// collectors that read those components' state at scrape time.
func New() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		acquireWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "chatql_db_acquire_wait_seconds",
			Help:    "Time an acquire waited for a pooled connection, successful or not.",
			Buckets: waitBuckets,
		}),
		hold: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "chatql_db_connection_hold_seconds",
			Help:    "Time a connection was held from borrow to release, per borrow (an operation or a background job).",
			Buckets: waitBuckets,
		}),
		operations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "chatql_graphql_operation_duration_seconds",
			Help:    "GraphQL operation duration by operation type and outcome (ok, or the first error code).",
			Buckets: waitBuckets,
		}, []string{"type", "outcome"}),
		leaks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatql_db_connection_leaks_total",
			Help: "Connections held longer than DB_LEAK_THRESHOLD by one operation or job.",
		}),
		admission: newAdmissionMetrics(),
		connect: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "chatql_db_connection_create_seconds",
			Help:    "Time opening a database connection took (TCP, TLS, authentication, startup), successful or not.",
			Buckets: waitBuckets,
		}),
	}
	m.registry.MustRegister(m.acquireWait, m.hold, m.operations, m.leaks, m.connect,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// WatchPool registers the collector that reads pool's snapshot at scrape.
func (m *Metrics) WatchPool(pool *dbpool.Pool) {
	m.registry.MustRegister(poolCollector{pool: pool})
}

// AcquireWait implements dbpool.Observer.
func (m *Metrics) AcquireWait(d time.Duration, _ error) { m.acquireWait.Observe(d.Seconds()) }

// ConnectionHeld implements dbpool.Observer.
func (m *Metrics) ConnectionHeld(d time.Duration) { m.hold.Observe(d.Seconds()) }

// ConnectionLeaked implements dbpool.Observer.
func (m *Metrics) ConnectionLeaked() { m.leaks.Inc() }

// Connected implements dbpool.Observer.
func (m *Metrics) Connected(d time.Duration, _ error) { m.connect.Observe(d.Seconds()) }

// Operation records one GraphQL operation. opType is query, mutation or
// subscription and outcome "ok" or an error code: both come from small
// fixed sets, never from what clients send, so the label cardinality is
// bounded.
func (m *Metrics) Operation(opType, outcome string, d time.Duration) {
	m.operations.WithLabelValues(opType, outcome).Observe(d.Seconds())
}

// Handler serves the exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// RequireToken wraps h so that it answers 401 unless the request carries
// Authorization: Bearer <token>. An empty token leaves h open.
func RequireToken(token string, h http.Handler) http.Handler {
	if token == "" {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="chatql metrics"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}
