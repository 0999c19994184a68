package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"chatql/graph"
	"chatql/localpg/pgtest"
)

// TestBadConfiguration runs the built binary with each bad value: it must
// exit 2 before listening, with one line naming the variable and value.
func TestBadConfiguration(t *testing.T) {
	skipInShort(t, "runs the built binary")
	t.Parallel()
	buildBinary(t)
	cases := []struct {
		env  []string
		want []string
	}{
		{[]string{"DB_POOL_SIZE=abc"}, []string{`DB_POOL_SIZE="abc"`, "integer >= 1"}},
		{[]string{"DB_POOL_SIZE=0"}, []string{`DB_POOL_SIZE="0"`, "integer >= 1"}},
		{[]string{"DB_MAX_OVERFLOW=-3"}, []string{`DB_MAX_OVERFLOW="-3"`, "integer >= 0"}},
		{[]string{"DB_POOL_TIMEOUT=0"}, []string{`DB_POOL_TIMEOUT="0"`, "positive number of seconds"}},
		{[]string{"DB_POOL_RECYCLE=soon"}, []string{`DB_POOL_RECYCLE="soon"`, "-1 to disable"}},
		{[]string{"DB_ECHO=maybe"}, []string{`DB_ECHO="maybe"`, "true or false"}},
		{[]string{"DATABASE_URL=postgres://u:secret@host:notaport/db"}, []string{"DATABASE_URL=", "postgres:// URL"}},
		{[]string{"LOG_FORMAT=xml"}, []string{`LOG_FORMAT="xml"`, "text, json"}},
		// The realtime listener would take the only connection.
		{[]string{"DB_POOL_SIZE=1", "DB_MAX_OVERFLOW=0"}, []string{"DB_POOL_SIZE=1 with DB_MAX_OVERFLOW=0", "REALTIME=off", "DATABASE_DIRECT_URL"}},
		// Every bad variable is reported at once, on one line.
		{[]string{"DB_POOL_SIZE=abc", "DB_MAX_OVERFLOW=-3", "DB_ECHO=maybe"},
			[]string{`DB_POOL_SIZE="abc"`, `DB_MAX_OVERFLOW="-3"`, `DB_ECHO="maybe"`}},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.env, " "), func(t *testing.T) {
			t.Parallel()
			code, stderr := runBinary(t, append([]string{"LISTEN_ADDR=127.0.0.1:1", "JWT_SECRET=" + testSecret}, tc.env...))
			out := strings.TrimSpace(stderr)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; stderr:\n%s", code, out)
			}
			if strings.Count(out, "\n") != 0 {
				t.Errorf("want one line, got:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("stderr %q does not mention %q", out, w)
				}
			}
			if strings.Contains(out, "secret") {
				t.Errorf("stderr leaks the password: %s", out)
			}
		})
	}
}

// TestGracefulShutdown sends SIGTERM while a request is in flight: the
// request completes, the process exits 0 and leaves no backend behind.
func TestGracefulShutdown(t *testing.T) {
	skipInShort(t, "runs the built binary")
	t.Parallel()
	p, appName := startChatql(t, pgtest.NewDatabase(t), "DB_POOL_SIZE=2")
	super := superuserConn(t)
	backends := func() int {
		n, err := countBackends(super, appName)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if backends() == 0 {
		t.Fatal("server holds no connection after readiness check: application_name not applied?")
	}

	// A request in flight: headers sent, the body still arriving. With
	// Expect: 100-continue the server says when its handler has begun to
	// read the body.
	query := `{"query":"{ poolStatus { status checkedOut } }"}`
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "POST /query HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n%s",
		p.addr, len(query), query[:10])
	replies := bufio.NewReader(conn)
	for _, want := range []string{"HTTP/1.1 100 Continue\r\n", "\r\n"} {
		if line, err := replies.ReadString('\n'); err != nil || line != want {
			t.Fatalf("waiting for the server to read the body: %q %v, want %q", line, err, want)
		}
	}

	p.signal(t, syscall.SIGTERM)
	// The listener closes, so new connections are refused...
	waitFor(t, 20*time.Second, "the server to refuse new connections after SIGTERM", func() bool {
		c, err := net.DialTimeout("tcp", p.addr, 100*time.Millisecond)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	// ...while the request in flight completes.
	if _, err := io.WriteString(conn, query[10:]); err != nil {
		t.Fatalf("finish request body: %v", err)
	}
	resp, err := io.ReadAll(replies)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 200")) || !bytes.Contains(resp, []byte(`"poolStatus"`)) {
		t.Fatalf("in-flight request did not complete: %s", resp)
	}

	p.wait(t, 30*time.Second)
	// A backend leaves pg_stat_activity a moment after its client hangs up.
	waitFor(t, 20*time.Second, "the stopped process's backends to go", func() bool { return backends() == 0 },
		func() string { return fmt.Sprintf("%d remain", backends()) })
}

// TestLocalPostgres is `make run` without DATABASE_URL: the first run
// creates the cluster, migrates and seeds; Ctrl-C stops the cluster; the
// next run reuses the data without seeding again; a killed run's orphaned
// server does not block the one after.
func TestLocalPostgres(t *testing.T) {
	skipInShort(t, "creates and starts a cluster three times")
	t.Parallel()
	// The cluster runs as the postgres user when we are root: its parent
	// directories must be traversable by it.
	dir, err := os.MkdirTemp("", "chatql-run-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	pidFile := filepath.Join(dir, ".data", "postgres", "postmaster.pid")

	first := startProcess(t, dir)
	for _, want := range []string{"local postgres started", "demo data seeded", "playground=http://"} {
		if !strings.Contains(first.logs.String(), want) {
			t.Errorf("first run logs lack %q:\n%s", want, first.logs.String())
		}
	}
	first.stop(t, os.Interrupt)
	if !strings.Contains(first.logs.String(), "local postgres stopped") {
		t.Errorf("Ctrl-C did not stop the cluster:\n%s", first.logs.String())
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("postmaster.pid still there after Ctrl-C: %v", err)
	}

	second := startProcess(t, dir)
	if strings.Contains(second.logs.String(), "demo data seeded") {
		t.Errorf("second run seeded again:\n%s", second.logs.String())
	}
	if fi, err := os.Stat(filepath.Join(dir, ".data", "jwt-secret")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("dev JWT secret not kept in .data: %v", err)
	}
	// The printed demo header works for the Inbox query, with demo data.
	header := regexp.MustCompile(`Authorization: (Bearer [A-Za-z0-9._-]+)`).FindStringSubmatch(second.logs.String())
	if header == nil {
		t.Fatalf("no demo header in the log:\n%s", second.logs.String())
	}
	client := gqlClient{url: second.url(), http: http.DefaultClient}
	r, err := client.do(context.Background(), header[1], map[string]any{"query": graph.InboxQuery})
	if err != nil {
		t.Fatal(err)
	}
	var inbox struct {
		Conversations struct{ Edges []any }
	}
	if err := json.Unmarshal(r.Data, &inbox); err != nil || !r.ok() || len(inbox.Conversations.Edges) == 0 || r.Extensions.DB == nil {
		t.Errorf("Inbox with the demo header: %d %s", r.Status, r.Raw)
	}
	second.stop(t, os.Kill) // a crash: the cluster is orphaned

	third := startProcess(t, dir)
	third.stop(t, syscall.SIGTERM)
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("postmaster.pid still there after SIGTERM: %v", err)
	}
}

// TestMigrateCommand: `chatql migrate` applies the schema and exits 0.
func TestMigrateCommand(t *testing.T) {
	skipInShort(t, "runs the built binary")
	t.Parallel()
	ctx := context.Background()
	name := "migrate_" + randomSuffix(6)
	admin := superuserConn(t)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	defer admin.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)")

	if code, out := runBinary(t, []string{"DATABASE_URL=" + pgtest.SuperuserURL(name), "JWT_SECRET=" + testSecret}, "migrate"); code != 0 {
		t.Fatalf("migrate: exit %d\n%s", code, out)
	}
	conn, err := pgx.Connect(ctx, pgtest.SuperuserURL(name))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var tables int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename IN ('users','conversations','conversation_participants','messages')").Scan(&tables); err != nil || tables != 4 {
		t.Fatalf("tables after migrate: %d %v", tables, err)
	}
}
