package pgtest

// The harness of the package's tests (which are inside the package, for
// the bouncer's unexported parts): TestMain, connections, and the one poll
// helper.

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) {
	os.Exit(Main(m, migrate))
}

// skipInShort skips t under -short, saying why it takes long.
func skipInShort(t *testing.T, why string) {
	t.Helper()
	if testing.Short() {
		t.Skip(why + ": not in -short")
	}
}

// migrate stands in for chatql/migrations.Up: one table is enough to tell a
// migrated database from a blank one.
func migrate(ctx context.Context, databaseURL string) error {
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE TABLE t (x int)")
	return err
}

// connect connects to url, failing the test if it cannot; the test's end
// closes the connection.
func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := dialBouncer(t, url)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// dialBouncer connects to url (a bouncer's, usually); the test's end closes
// the connection.
func dialBouncer(t *testing.T, url string) (*pgx.Conn, error) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err == nil {
		t.Cleanup(func() { conn.Close(context.Background()) })
	}
	return conn, err
}
