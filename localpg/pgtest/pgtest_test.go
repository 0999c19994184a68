package pgtest

import (
	"sync"
	"testing"
)

func TestNewDatabase(t *testing.T) {
	var mu sync.Mutex
	var names []string

	t.Run("group", func(t *testing.T) {
		for _, test := range []string{"a", "b"} {
			t.Run(test, func(t *testing.T) {
				t.Parallel()
				conn := connect(t, NewDatabase(t))
				var name string
				if err := conn.QueryRow(t.Context(), "SELECT current_database()").Scan(&name); err != nil {
					t.Fatal(err)
				}
				mu.Lock()
				names = append(names, name)
				mu.Unlock()

				// The migration's table is there, and empty: each test
				// has its own copy.
				if _, err := conn.Exec(t.Context(), "INSERT INTO t VALUES (1)"); err != nil {
					t.Fatal(err)
				}
				var n int
				if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM t").Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n != 1 {
					t.Errorf("t has %d rows, want only this test's 1", n)
				}
			})
		}
	})

	if len(names) != 2 || names[0] == names[1] {
		t.Fatalf("databases = %v, want two different ones", names)
	}
	// Both were dropped when their tests ended.
	conn := connect(t, SuperuserURL("postgres"))
	var left int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM pg_database WHERE datname = ANY($1)", names).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d of %v still exist", left, names)
	}
}

// TestCluster restarts the shared cluster, so it is not parallel: it runs
// before the package's parallel tests start, which would lose their
// connections (and their PgBouncers' server connections) to the restart.
func TestCluster(t *testing.T) {
	skipInShort(t, "restarts the cluster")
	c := Cluster()
	if c == nil {
		t.Skip("TEST_DATABASE_URL is set: there is no throwaway cluster to restart")
	}
	url := NewDatabase(t)
	if err := c.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	connect(t, url) // the database survives a restart

	var super bool
	conn := connect(t, SuperuserURL("postgres"))
	if err := conn.QueryRow(t.Context(), "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&super); err != nil {
		t.Fatal(err)
	}
	if !super {
		t.Error("SuperuserURL does not connect as a superuser")
	}
}
