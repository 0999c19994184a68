// Package pgtest gives each test its own fresh, migrated PostgreSQL database.
//
// A package's TestMain calls Main, which finds a server (TEST_DATABASE_URL, or
// else a throwaway localpg cluster), builds a template database and migrates
// it once. Each test then calls NewDatabase for a clone of that template,
// which takes milliseconds rather than a migration run, and is dropped when
// the test ends. Tests can therefore run in parallel without seeing each
// other's rows.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/goleak"

	"chatql/localpg"
)

const (
	// templateName is the migrated template on a throwaway cluster. On a
	// shared TEST_DATABASE_URL server a random suffix is added, because
	// `go test ./...` runs several packages' TestMains at once.
	templateName = "chatql_template"
	// rootPattern names the temporary directories of throwaway clusters, so
	// that a later run can find and remove the ones a killed run left.
	rootPattern = "chatql-pgtest-*"
	// ownerFile, in such a directory, holds the pid of the test binary that
	// owns the cluster.
	ownerFile = "owner.pid"
	// objectInUse is SQLSTATE 55006: CREATE DATABASE ... TEMPLATE while
	// another session is connected to the template.
	objectInUse = "55006"
)

// current is the environment Main set up. Package-level state is unavoidable
// here: TestMain has no other way to hand anything to the tests. Main writes
// it before m.Run and the tests only read it.
var current *env

// env is one test binary's database server and template.
type env struct {
	cluster *localpg.Cluster // nil when TEST_DATABASE_URL is used
	root    string           // the throwaway cluster's temporary directory
	server  *url.URL         // how to reach the server; the path is replaced per database
	adminDB string           // database to connect to for CREATE and DROP DATABASE
	// template is the migrated database that NewDatabase clones; created
	// says whether it exists yet, so that close knows to drop it.
	template string
	created  bool

	// cloneMu serialises clones: Postgres refuses to copy a template that
	// another session (such as a concurrent clone) is using.
	cloneMu sync.Mutex
}

// Main is called from a package's TestMain; it wraps m.Run and returns the
// exit code:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, migrate)) }
//
// If TEST_DATABASE_URL is set (a postgres:// URL for a superuser, or a role
// that may CREATE DATABASE), Main uses that server. Otherwise it starts a
// throwaway cluster in a temporary directory, tuned for speed over
// durability (fsync, synchronous_commit and full_page_writes off) and with
// room for 300 connections, and removes it afterwards, whether the tests
// passed or not. Either way it creates a template database, runs migrate on
// it once, and lets NewDatabase clone it.
//
// migrate is given the template's URL. Passing it in, rather than importing
// chatql/migrations here, keeps this package below the schema it tests.
func Main(m *testing.M, migrate func(ctx context.Context, databaseURL string) error) int {
	e, err := setUp(migrate)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		return 1
	}
	current = e
	code := m.Run()
	if err := e.close(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// NewDatabase creates a fresh database cloned from the migrated template,
// drops it (disconnecting any sessions left) when the test ends, and returns
// its URL. It is safe to call from parallel tests.
func NewDatabase(t testing.TB) string {
	t.Helper()
	e := currentEnv()
	name := "test_" + randomHex(8)
	if err := e.clone(t.Context(), name); err != nil {
		t.Fatalf("pgtest: create test database: %v", err)
	}
	t.Cleanup(func() {
		// t.Context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop test database %s: %v", name, err)
		}
	})
	return e.url(name)
}

// Cluster returns the throwaway cluster, or nil when TEST_DATABASE_URL is in
// use: a test that must restart the server should then skip, saying why.
func Cluster() *localpg.Cluster {
	return currentEnv().cluster
}

// SuperuserURL returns a URL for database dbname (usually "postgres") with
// the server's most privileged credentials: the throwaway cluster's
// superuser, or TEST_DATABASE_URL's role. Tests use it to look at
// pg_stat_activity or call pg_terminate_backend.
func SuperuserURL(dbname string) string {
	return currentEnv().url(dbname)
}

// currentEnv returns what Main set up, and panics with the fix when Main was
// not called: that is a mistake in the test code, not a test failure.
func currentEnv() *env {
	if current == nil {
		panic("pgtest: Main was not called; add func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, migrate)) } to the package's tests")
	}
	return current
}

// setUp finds or starts the server and builds the migrated template. On
// failure it undoes what it did.
func setUp(migrate func(ctx context.Context, databaseURL string) error) (*env, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	e := &env{}
	if raw := os.Getenv("TEST_DATABASE_URL"); raw != "" {
		if err := e.useServer(raw); err != nil {
			return nil, err
		}
		e.template = templateName + "_" + randomHex(4)
	} else {
		e.template = templateName
		if err := e.startCluster(ctx); err != nil {
			return nil, errors.Join(err, e.close())
		}
	}

	if err := e.exec(ctx, "CREATE DATABASE "+pgx.Identifier{e.template}.Sanitize()); err != nil {
		return nil, errors.Join(fmt.Errorf("create template database %s: %w", e.template, err), e.close())
	}
	e.created = true
	if err := migrate(ctx, e.url(e.template)); err != nil {
		return nil, errors.Join(fmt.Errorf("migrate template database %s: %w", e.template, err), e.close())
	}
	return e, nil
}

// useServer points the environment at the server of TEST_DATABASE_URL.
func (e *env) useServer(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return errors.New("TEST_DATABASE_URL must be a postgres:// URL")
	}
	cfg, err := pgx.ParseConfig(raw)
	if err != nil {
		return fmt.Errorf("TEST_DATABASE_URL: %w", err)
	}
	e.server = u
	e.adminDB = cfg.Database // the URL's own database, which exists
	return nil
}

// startCluster starts a throwaway cluster in a new temporary directory.
func (e *env) startCluster(ctx context.Context) error {
	sweepAbandoned(ctx)

	root, err := os.MkdirTemp("", rootPattern)
	if err != nil {
		return fmt.Errorf("create cluster directory: %w", err)
	}
	e.root = root
	// MkdirTemp makes the directory 0700; when the tests run as root the
	// server runs as the postgres user, which must be able to traverse it.
	if err := os.Chmod(root, 0o755); err != nil {
		return fmt.Errorf("create cluster directory: %w", err)
	}
	if err := os.WriteFile(filepath.Join(root, ownerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("create cluster directory: %w", err)
	}

	c, err := localpg.Open(ctx, localpg.Options{
		Dir: filepath.Join(root, "data"),
		Settings: map[string]string{
			"max_connections": "300",
			// A throwaway cluster need not survive a crash.
			"fsync":              "off",
			"synchronous_commit": "off",
			"full_page_writes":   "off",
		},
	})
	if err != nil {
		return err
	}
	e.cluster = c
	if err := c.Start(ctx); err != nil {
		return err
	}
	u, err := url.Parse(c.URL("postgres"))
	if err != nil {
		return fmt.Errorf("cluster URL: %w", err)
	}
	e.server = u
	e.adminDB = "postgres"
	return nil
}

// close undoes setUp: it drops the template on a shared server, and stops and
// removes a throwaway cluster. It copes with a half-finished setUp.
func (e *env) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	if e.cluster == nil && e.created {
		if err := e.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{e.template}.Sanitize()+" WITH (FORCE)"); err != nil {
			errs = append(errs, fmt.Errorf("drop template database %s: %w", e.template, err))
		}
	}
	if e.cluster != nil {
		if err := e.cluster.Stop(ctx); err != nil {
			// Removing the directory under a running server would leave
			// it running for good; leave both for sweepAbandoned.
			return errors.Join(append(errs, err)...)
		}
	}
	if e.root != "" {
		if err := os.RemoveAll(e.root); err != nil {
			errs = append(errs, fmt.Errorf("remove cluster directory: %w", err))
		}
	}
	return errors.Join(errs...)
}

// clone creates database name from the template, retrying while the template
// is busy: the cloneMu keeps this process's clones apart, but the session
// that migrated the template may take a moment to go away.
func (e *env) clone(ctx context.Context, name string) error {
	e.cloneMu.Lock()
	defer e.cloneMu.Unlock()

	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize() + " TEMPLATE " + pgx.Identifier{e.template}.Sanitize()
	const attempts = 5
	for attempt := 1; ; attempt++ {
		err := e.exec(ctx, sql)
		var pgErr *pgconn.PgError
		if err == nil || attempt == attempts || !errors.As(err, &pgErr) || pgErr.Code != objectInUse {
			return err
		}
		timer := time.NewTimer(time.Duration(attempt) * 200 * time.Millisecond)
		select {
		case <-ctx.Done():
			timer.Stop()
			return err
		case <-timer.C:
		}
	}
}

// exec runs one statement over a short-lived connection to the admin
// database. CREATE and DROP DATABASE cannot run in a transaction, and the
// tests' own connections must not be borrowed for them.
func (e *env) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, e.url(e.adminDB))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// url returns the server URL for database dbname.
func (e *env) url(dbname string) string {
	u := *e.server
	u.Path = "/" + dbname
	u.RawPath = ""
	return u.String()
}

// sweepAbandoned stops and removes the throwaway clusters of test binaries
// that died without cleaning up: a panicking test, a -timeout, a Ctrl-C. The
// server runs in its own process group, so nothing else would ever stop it.
// A directory counts as abandoned only when its owner file names a process
// that no longer exists; problems are reported and skipped, since they are
// not this run's.
func sweepAbandoned(ctx context.Context) {
	roots, _ := filepath.Glob(filepath.Join(os.TempDir(), rootPattern)) // the pattern is valid
	for _, root := range roots {
		content, err := os.ReadFile(filepath.Join(root, ownerFile))
		if err != nil {
			continue // being created, or not ours to judge
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(content)))
		if err != nil || pid <= 0 || processExists(pid) {
			continue
		}
		dataDir := filepath.Join(root, "data")
		if _, err := os.Stat(filepath.Join(dataDir, "PG_VERSION")); err == nil {
			c, err := localpg.Open(ctx, localpg.Options{Dir: dataDir})
			if err == nil {
				err = c.Stop(ctx)
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "pgtest: cannot stop the abandoned test cluster in %s: %v\n", root, err)
				continue
			}
		}
		if err := os.RemoveAll(root); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: cannot remove the abandoned test cluster in %s: %v\n", root, err)
		}
	}
}

// processExists reports whether process pid exists. Signal 0 checks without
// signalling; EPERM means it exists but belongs to someone else.
func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// randomHex returns 2n random lowercase hex digits: database names made of
// them need no quoting and do not collide between parallel tests.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return hex.EncodeToString(b)
}

// NewBouncer starts a PgBouncer in front of the test cluster with opts
// (Dir, Backend and Logger are filled in) and stops it when the test ends.
// It skips the test when TEST_DATABASE_URL is in use: PgBouncer needs the
// superuser password of a cluster the tests started.
func NewBouncer(t testing.TB, opts BouncerOptions) *Bouncer {
	t.Helper()
	cluster := Cluster()
	if cluster == nil {
		t.Skip("TEST_DATABASE_URL is in use: PgBouncer goes in front of a throwaway local cluster, whose superuser password it needs")
	}
	opts.Dir = bouncerDir(t)
	opts.Backend = cluster
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	b, err := StartBouncer(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Stop(); err != nil {
			t.Errorf("stop pgbouncer: %v", err)
		}
	})
	return b
}

// bouncerDir returns a new directory for a PgBouncer, removed when the test
// ends. Not t.TempDir: that is 0700, and PgBouncer runs as the server's
// account when the tests run as root.
func bouncerDir(t testing.TB) string {
	t.Helper()
	root, err := os.MkdirTemp("", "chatql-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "pgbouncer")
}

// NoLeakedGoroutines turns code, a test binary's exit code, into a failure
// when goroutines outlive the tests (every pool, server and subscription a
// test starts must be gone by then), saying which:
//
//	os.Exit(pgtest.NoLeakedGoroutines(pgtest.Main(m, migrations.Apply)))
func NoLeakedGoroutines(code int) int {
	if err := goleak.Find(); code == 0 && err != nil {
		fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
		return 1
	}
	return code
}

// WaitFor polls cond until it holds and returns how long that took. After
// timeout it fails the test with what it waited for and, when state is
// given, what state says at that moment. Only the test's goroutine may
// call it.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool, state ...func() string) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			msg := fmt.Sprintf("timed out after %s waiting for %s", timeout, what)
			for _, s := range state {
				msg += "; " + s()
			}
			t.Fatal(msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}
