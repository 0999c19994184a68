package localpg

// The harness of the package's tests: clusters in temporary directories,
// stopped and removed when their test ends.

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"
)

// skipInShort skips a test that creates and starts a cluster of its own
// (initdb and a server start: seconds each) under -short.
func skipInShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("creates and starts a cluster of its own: not in -short")
	}
}

// newCluster opens a cluster in a fresh temporary directory and stops and
// removes it when the test ends.
func newCluster(t *testing.T) *Cluster {
	t.Helper()
	return openCluster(t, Options{Dir: filepath.Join(clusterRoot(t), "data")})
}

// clusterRoot returns a new temporary directory for a cluster, removed
// when the test ends.
func clusterRoot(t *testing.T) string {
	t.Helper()
	root, err := os.MkdirTemp("", "localpg-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	// MkdirTemp makes the directory 0700; when the tests run as root the
	// server runs as the postgres user, which must be able to traverse it.
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

// openCluster opens a cluster with a logger that writes to the test's output,
// and stops it when the test ends.
func openCluster(t *testing.T, opts Options) *Cluster {
	t.Helper()
	opts.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	c, err := Open(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(context.Background()); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return c
}

// queryString connects to url and returns the single text value of query.
func queryString(t *testing.T, url, query string) string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(t.Context())
	var s string
	if err := conn.QueryRow(t.Context(), query).Scan(&s); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return s
}

func mustStart(t *testing.T, c *Cluster) {
	t.Helper()
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
}
