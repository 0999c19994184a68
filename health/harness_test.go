package health_test

// The harness of the package's tests: TestMain, a server with the health
// endpoints over a pool, and the one poll helper.

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"chatql/dbpool"
	"chatql/health"
	"chatql/localpg/pgtest"
	"chatql/migrations"
)

func TestMain(m *testing.M) {
	// Every pool is closed by its test: no goroutine may outlive them.
	os.Exit(pgtest.NoLeakedGoroutines(pgtest.Main(m, migrations.Apply)))
}

// newServer serves the health endpoints over a pool on a fresh database.
func newServer(t *testing.T, cfg dbpool.Config) (*dbpool.Pool, *httptest.Server) {
	t.Helper()
	return serveHealth(t, pgtest.NewDatabase(t), cfg)
}

// serveHealth serves the health endpoints over a pool on url; the test's
// end closes both.
func serveHealth(t *testing.T, url string, cfg dbpool.Config) (*dbpool.Pool, *httptest.Server) {
	t.Helper()
	pool, err := dbpool.New(url, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	health.Register(mux, pool, slog.New(slog.DiscardHandler), nil)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { srv.Close(); pool.Close() })
	return pool, srv
}

// get decodes GET url into into and returns the status.
func get(t *testing.T, url string, into any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		t.Fatalf("decode %s: %v", url, err)
	}
	return resp.StatusCode
}

// waitFor is pgtest.WaitFor: poll a condition, fail the test at a deadline.
var waitFor = pgtest.WaitFor
