package load_test

// The harness of the package's tests: TestMain and a seeded database.

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"chatql/load"
	"chatql/localpg/pgtest"
	"chatql/migrations"
)

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m, migrations.Apply))
}

var small = load.DataSet{Users: 100, Conversations: 200, Messages: 5000, HeavyUserConversations: 60, Seed: 7}

func seeded(t *testing.T) (string, []string) {
	t.Helper()
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	users, err := load.Seed(ctx, conn, small)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := load.Seed(ctx, conn, small); err != load.ErrNotEmpty {
		t.Errorf("seeding twice: %v, want ErrNotEmpty", err)
	}
	return url, users
}

// TestSeed: the data set has the promised shape and is the same every time.
