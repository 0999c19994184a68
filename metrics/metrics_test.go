package metrics

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestInstruments: what the pool and the GraphQL layer report shows up in
// the exposition, under bounded labels.
func TestInstruments(t *testing.T) {
	m := New()
	m.AcquireWait(3*time.Millisecond, nil)
	m.ConnectionHeld(40 * time.Millisecond)
	m.ConnectionLeaked()
	m.ConnectionLeaked()
	m.Connected(20*time.Millisecond, nil)
	m.Operation("query", "ok", 5*time.Millisecond)
	m.Operation("mutation", "DB_POOL_TIMEOUT", time.Second)

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatal(err)
	}
	if got := fams["chatql_db_connection_leaks_total"].GetMetric()[0].GetCounter().GetValue(); got != 2 {
		t.Errorf("leaks = %v, want 2", got)
	}
	if got := fams["chatql_db_acquire_wait_seconds"].GetMetric()[0].GetHistogram().GetSampleCount(); got != 1 {
		t.Errorf("acquire waits = %d", got)
	}
	if got := fams["chatql_db_connection_hold_seconds"].GetMetric()[0].GetHistogram().GetSampleSum(); got < 0.039 || got > 0.041 {
		t.Errorf("hold sum = %v", got)
	}
	if got := fams["chatql_db_connection_create_seconds"].GetMetric()[0].GetHistogram().GetSampleCount(); got != 1 {
		t.Errorf("connects = %d", got)
	}
	if got := len(fams["chatql_graphql_operation_duration_seconds"].GetMetric()); got != 2 {
		t.Errorf("%d operation series, want 2", got)
	}
}

func TestRequireToken(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	for token, cases := range map[string]map[string]int{
		"":    {"": 200, "Bearer x": 200},
		"tok": {"": 401, "Bearer x": 401, "tok": 401, "Bearer tok": 200},
	} {
		for header, want := range cases {
			req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			if header != "" {
				req.Header.Set("Authorization", header)
			}
			rec := httptest.NewRecorder()
			RequireToken(token, ok).ServeHTTP(rec, req)
			if rec.Code != want {
				t.Errorf("token %q, header %q: %d, want %d", token, header, rec.Code, want)
			}
		}
	}
}
