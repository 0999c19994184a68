package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"chatql/graph"
)

// scrape reads /metrics with the Prometheus text parser.
func (a *testAPI) scrape(token string) map[string]*dto.MetricFamily {
	a.t.Helper()
	fams, err := scrapeMetrics(a.srv.URL, token)
	if err != nil {
		a.t.Fatal(err)
	}
	return fams
}

// value is the value of an unlabelled gauge or counter, which must be there.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string) float64 {
	t.Helper()
	v, ok := metricValue(fams, name)
	if !ok {
		t.Fatalf("metric %s missing", name)
	}
	return v
}

// operations is the count of the operation histogram for type and outcome.
func operations(fams map[string]*dto.MetricFamily, opType, outcome string) uint64 {
	f, ok := fams["chatql_graphql_operation_duration_seconds"]
	if !ok {
		return 0
	}
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["type"] == opType && labels["outcome"] == outcome {
			return m.Histogram.GetSampleCount()
		}
	}
	return 0
}

// TestMetricsMatchHealth: with no load, /metrics' gauges and counters equal
// /health/db-pool's snapshot, and the runtime collectors are there.
func TestMetricsMatchHealth(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	_, token := a.user("Ann")
	a.post(token, "{ me { id } }", nil)
	a.waitReleased()
	fams := a.scrape("")
	var h map[string]any
	a.getJSON("/health/db-pool", &h)
	for metric, field := range map[string]string{
		"chatql_db_connections_checked_out":    "checked_out",
		"chatql_db_connections_idle":           "checked_in",
		"chatql_db_connections_open":           "total",
		"chatql_db_pool_size":                  "pool_size",
		"chatql_db_pool_max_overflow":          "max_overflow",
		"chatql_db_statements_total":           "statements",
		"chatql_db_connections_max":            "max_connections",
		"chatql_db_acquires_waiting":           "waiting",
		"chatql_db_acquires_total":             "acquire_count",
		"chatql_db_acquire_timeouts_total":     "timeouts",
		"chatql_db_invalid_connections_total":  "invalid",
		"chatql_db_recycled_connections_total": "recycled",
		"chatql_db_connections_opened_total":   "opened",
	} {
		if got, want := value(t, fams, metric), h[field]; got != want {
			t.Errorf("%s = %v, /health/db-pool %s = %v", metric, got, field, h[field])
		}
	}
	if got := fams["chatql_db_connection_create_seconds"].GetMetric()[0].GetHistogram().GetSampleCount(); float64(got) != h["opened"] {
		t.Errorf("%d connection creations timed, %v opened", got, h["opened"])
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("%s missing", name)
		}
	}
}

// TestMetricsCountWorkload: after N queries, one forced pool timeout and one
// terminated backend, the counters move by exactly the expected amounts.
func TestMetricsCountWorkload(t *testing.T) {
	t.Parallel()
	// A pool timeout of a second: opening the one connection on a loaded
	// machine must not run into it.
	a := newAPI(t, func(o *apiOptions) { o.pool.Size, o.pool.MaxOverflow, o.pool.Timeout = 1, 0, time.Second })
	_, token := a.user("Ann")
	a.post(token, "{ me { id } }", nil) // open the one connection
	a.waitReleased()
	before := a.scrape("")

	const n = 5
	for range n {
		if r := a.post(token, "{ me { id } }", nil); len(r.Errors) > 0 {
			t.Fatalf("query: %s", r.Raw)
		}
	}
	holder := a.pool.Scope()
	if _, err := holder.Exec(context.Background(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if r := a.post(token, "{ me { id } }", nil); r.code(t) != graph.CodePoolTimeout {
		t.Fatalf("want a pool timeout: %s", r.Raw)
	}
	holder.Release()
	a.waitReleased()
	killed := a.count("SELECT count(pg_terminate_backend(pid))::int FROM pg_stat_activity WHERE application_name = $1", a.appName)
	if killed != 1 {
		t.Fatalf("terminated %d backends, want 1", killed)
	}
	waitFor(t, 20*time.Second, "the terminated backend to go", func() bool { return a.backends() == 0 })
	if r := a.post(token, "{ me { id } }", nil); len(r.Errors) > 0 {
		t.Fatalf("query after terminate: %s", r.Raw)
	}
	a.waitReleased()
	after := a.scrape("")

	delta := func(name string) float64 { return value(t, after, name) - value(t, before, name) }
	// n queries, the holder, and the query after the terminate.
	if got := delta("chatql_db_acquires_total"); got != n+2 {
		t.Errorf("acquires moved by %v, want %d", got, n+2)
	}
	if got := delta("chatql_db_statements_total"); got < n+2 {
		t.Errorf("statements moved by %v, want at least %d", got, n+2)
	}
	if got := delta("chatql_db_acquire_timeouts_total"); got != 1 {
		t.Errorf("timeouts moved by %v, want 1", got)
	}
	if got := delta("chatql_db_invalid_connections_total"); got != 1 {
		t.Errorf("invalid moved by %v, want 1", got)
	}
	if got := operations(after, "query", "ok") - operations(before, "query", "ok"); got != n+1 {
		t.Errorf("ok queries recorded: %d, want %d", got, n+1)
	}
	if got := operations(after, "query", graph.CodePoolTimeout) - operations(before, "query", graph.CodePoolTimeout); got != 1 {
		t.Errorf("timed-out queries recorded: %d, want 1", got)
	}
}

// TestMetricsToken: with METRICS_TOKEN set, /metrics and /health/db-pool
// need it; liveness and readiness do not.
func TestMetricsToken(t *testing.T) {
	t.Parallel()
	a := newAPI(t, func(o *apiOptions) { o.metricsToken = "s3cret-token" })
	for _, path := range []string{"/metrics", "/health/db-pool"} {
		for header, want := range map[string]int{"": 401, "Bearer wrong": 401, "s3cret-token": 401, "Bearer s3cret-token": 200} {
			req, _ := http.NewRequest(http.MethodGet, a.srv.URL+path, nil)
			if header != "" {
				req.Header.Set("Authorization", header)
			}
			if resp, _ := a.do(req); resp.StatusCode != want {
				t.Errorf("%s with %q: %d, want %d", path, header, resp.StatusCode, want)
			}
		}
	}
	for _, path := range []string{"/health", "/health/ready"} {
		if resp, _ := a.get("", path); resp.StatusCode != 200 {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
	}
}

// TestStatementTimeoutCode: an operation whose statement outlives
// DB_STATEMENT_TIMEOUT gets DB_TIMEOUT, and its connection stays usable.
func TestStatementTimeoutCode(t *testing.T) {
	t.Parallel()
	a := newAPI(t, func(o *apiOptions) {
		o.pool.Size, o.pool.MaxOverflow, o.pool.StatementTimeout = 1, 0, 300*time.Millisecond
	})
	viewer, token := a.user("Ann")
	conv := a.conversation("", []string{viewer}, "hello")
	unlock := a.lockParticipants(conv)
	r := a.post(token, fmt.Sprintf(`mutation { markConversationRead(conversationId: %q) { id } }`, conv), nil)
	if code := r.code(t); code != graph.CodeDBTimeout {
		t.Fatalf("code %s, want DB_TIMEOUT: %s", code, r.Raw)
	}
	unlock()
	if r := a.post(token, "{ me { id } }", nil); len(r.Errors) > 0 {
		t.Fatalf("after a statement timeout: %s", r.Raw)
	}
	if st := a.pool.Stats(); st.Invalid != 0 || st.Opened != 1 {
		t.Errorf("connection replaced after a statement timeout: %+v", st)
	}
}

// TestMetricsLint: the exposition passes Prometheus' own lint, the checks
// `promtool check metrics` runs (client_golang's promlint): no gauge named
// like a counter, base units, help on every metric.
func TestMetricsLint(t *testing.T) {
	t.Parallel()
	a := newAPI(t, withRealtime)
	_, token := a.user("Ann")
	a.post(token, "{ me { id } }", nil)
	a.waitReleased()
	resp, body := a.get("", "/metrics")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}
