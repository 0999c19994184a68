package localpg

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestFindBinaries(t *testing.T) {
	dir, err := FindBinaries()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("FindBinaries() = %s, which lacks %s: %v", dir, name, err)
		}
	}
}

func TestErrNotInstalledIsOneLine(t *testing.T) {
	if strings.Contains(ErrNotInstalled.Error(), "\n") {
		t.Errorf("ErrNotInstalled spans lines: %q", ErrNotInstalled)
	}
}

func TestDirVersion(t *testing.T) {
	for dir, want := range map[string][2]int{
		"/usr/lib/postgresql/15/bin":          {15, 0},
		"/usr/lib/postgresql/9.6/bin":         {9, 6},
		"/opt/homebrew/opt/postgresql@16/bin": {16, 0},
		"/usr/local/opt/postgresql/bin":       {0, 0},
	} {
		if got := dirVersion(dir); got != want {
			t.Errorf("dirVersion(%s) = %v, want %v", dir, got, want)
		}
	}
}

func TestLifecycle(t *testing.T) {
	skipInShort(t)
	t.Parallel()
	c := newCluster(t)
	ctx := t.Context()

	mustStart(t, c)
	port := c.Port()
	if port == 0 {
		t.Fatal("Port() = 0 after Start")
	}
	if got := queryString(t, c.URL("postgres"), "SELECT 1::text"); got != "1" {
		t.Errorf("select 1 = %q", got)
	}
	if got := queryString(t, c.URL("postgres"), "SHOW listen_addresses"); got != "127.0.0.1" {
		t.Errorf("listen_addresses = %q, want 127.0.0.1", got)
	}
	if got := queryString(t, c.URL("postgres"), "SHOW unix_socket_directories"); got != "" {
		t.Errorf("unix_socket_directories = %q, want none", got)
	}

	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Port() != port {
		t.Errorf("port after Restart = %d, want %d", c.Port(), port)
	}
	queryString(t, c.URL("postgres"), "SELECT 1::text")

	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if conn, err := pgx.Connect(ctx, c.URL("postgres")); err == nil {
		conn.Close(ctx)
		t.Error("connected after Stop")
	}

	// A second Open of the same directory reuses the cluster and its
	// password, and a fixed port is honoured.
	again := openCluster(t, Options{Dir: c.Dir(), Port: port})
	mustStart(t, again)
	if again.Port() != port {
		t.Errorf("Port() = %d, want the configured %d", again.Port(), port)
	}
	queryString(t, again.URL("postgres"), "SELECT 1::text")
}

func TestDatabases(t *testing.T) {
	skipInShort(t)
	t.Parallel()
	c := newCluster(t)
	ctx := t.Context()
	mustStart(t, c)

	// A name that needs quoting.
	const name = `chat "db"`
	if err := c.CreateDatabase(ctx, name, ""); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, c.URL(name), "SELECT current_database()"); got != name {
		t.Errorf("current_database() = %q, want %q", got, name)
	}
	if err := c.CreateDatabase(ctx, name, ""); err == nil {
		t.Error("creating an existing database succeeded")
	}

	// Clone it after giving it a table.
	if conn, err := pgx.Connect(ctx, c.URL(name)); err != nil {
		t.Fatal(err)
	} else {
		_, err := conn.Exec(ctx, "CREATE TABLE marker (x int)")
		conn.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := c.CreateDatabase(ctx, "clone", name); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, c.URL("clone"), "SELECT count(*)::text FROM marker"); got != "0" {
		t.Errorf("clone's marker table has %s rows", got)
	}

	if err := c.EnsureDatabase(ctx, name); err != nil {
		t.Errorf("EnsureDatabase of an existing database: %v", err)
	}
	if err := c.EnsureDatabase(ctx, "ensured"); err != nil {
		t.Fatal(err)
	}
	queryString(t, c.URL("ensured"), "SELECT 1::text")

	// Drop disconnects sessions that are still open.
	conn, err := pgx.Connect(ctx, c.URL(name))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := c.DropDatabase(ctx, name); err != nil {
		t.Fatal(err)
	}
	exists := queryString(t, c.URL("postgres"), fmt.Sprintf("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = '%s')::text", strings.ReplaceAll(name, "'", "''")))
	if exists != "true" && exists != "false" {
		t.Fatalf("exists = %q", exists)
	}
	if exists == "true" {
		t.Error("database still exists after DropDatabase")
	}
	if err := c.DropDatabase(ctx, name); err != nil {
		t.Errorf("dropping a missing database: %v", err)
	}
}

func TestStartRemovesStalePIDFile(t *testing.T) {
	skipInShort(t)
	t.Parallel()
	c := newCluster(t)
	ctx := t.Context()

	// A process that has exited: its pid is free.
	exited := exec.Command("true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		pid  int
	}{
		{"dead process", exited.Process.Pid},
		{"live process that is not postgres", os.Getpid()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustStart(t, c)
			if err := c.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			pidFile := filepath.Join(c.Dir(), "postmaster.pid")
			content := fmt.Sprintf("%d\n%s\n", tc.pid, c.Dir())
			if err := os.WriteFile(pidFile, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			// Stop must not mistake the file for a running server either.
			if err := c.Stop(ctx); err != nil {
				t.Fatalf("Stop with a stale postmaster.pid: %v", err)
			}
			if err := os.WriteFile(pidFile, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			mustStart(t, c)
			queryString(t, c.URL("postgres"), "SELECT 1::text")
			if err := c.Stop(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestStartStopsOrphan plays a chatql that was killed while its server ran: a
// new Cluster on the same directory finds the server still running and stops
// it before starting its own.
func TestStartStopsOrphan(t *testing.T) {
	skipInShort(t)
	t.Parallel()
	orphaned := newCluster(t)
	mustStart(t, orphaned)
	oldPort := orphaned.Port()

	c := openCluster(t, Options{Dir: orphaned.Dir()})
	mustStart(t, c)
	queryString(t, c.URL("postgres"), "SELECT 1::text")
	if c.Port() == oldPort {
		t.Fatalf("new cluster picked the orphan's port %d", oldPort)
	}
	if conn, err := pgx.Connect(t.Context(), orphaned.URL("postgres")); err == nil {
		conn.Close(t.Context())
		t.Error("the orphan still accepts connections")
	}
}

func TestOpenRejectsUntraversableParent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root runs the server as another user")
	}
	root, err := os.MkdirTemp("", "localpg-test-") // mode 0700
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	_, err = Open(t.Context(), Options{Dir: filepath.Join(root, "data")})
	if err == nil || !strings.Contains(err.Error(), root+" ") {
		t.Errorf("Open under a 0700 directory: err = %v, want one naming %s", err, root)
	}
}

func TestOpenRejectsBadSettingName(t *testing.T) {
	_, err := Open(t.Context(), Options{
		Dir:      filepath.Join(t.TempDir(), "data"),
		Settings: map[string]string{"fsync=off; rm": "x"},
	})
	if err == nil {
		t.Error("Open accepted a setting name with a shell metacharacter")
	}
}

func TestOpenWithoutBinaries(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := FindBinaries(); err == nil {
		// The versioned directories are searched too, so this machine may
		// well have them.
		t.Skip("binaries found outside PATH")
	} else if !errors.Is(err, ErrNotInstalled) {
		t.Errorf("err = %v, want ErrNotInstalled", err)
	}
}

func TestStartFailureQuotesLog(t *testing.T) {
	skipInShort(t)
	t.Parallel()
	c := openCluster(t, Options{
		Dir:      filepath.Join(clusterRoot(t), "data"),
		Settings: map[string]string{"max_connections": "many"},
	})
	err := c.Start(t.Context())
	if err == nil {
		t.Fatal("Start succeeded with max_connections=many")
	}
	// The server's own complaint, from the log tail.
	if !strings.Contains(err.Error(), `invalid value for parameter "max_connections"`) {
		t.Errorf("error does not quote the server log:\n%v", err)
	}
}
