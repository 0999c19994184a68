package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"chatql/graph"
	"chatql/localpg/pgtest"
	"chatql/migrations"
)

func TestMain(m *testing.M) {
	code := pgtest.Main(m, func(ctx context.Context, url string) error {
		_, err := migrations.Up(ctx, url, slog.New(slog.DiscardHandler))
		return err
	})
	// Every pool, server and operation is gone: so must their goroutines be.
	http.DefaultClient.CloseIdleConnections()
	if err := goleak.Find(); code == 0 && err != nil {
		fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
		code = 1
	}
	os.Exit(code)
}

const testSecret = "test-secret-0123456789abcdef-0123456789"

// buildBinary builds chatql once per test that needs the real process.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "chatql")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestBadConfiguration runs the built binary with each bad value: it must
// exit 2 before listening, with one line naming the variable and value.
func TestBadConfiguration(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
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
			cmd := exec.Command(bin)
			cmd.Dir = t.TempDir() // no .env, no .data
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "LISTEN_ADDR=127.0.0.1:1", "JWT_SECRET=" + testSecret}, tc.env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			code := -1
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			out := strings.TrimSpace(stderr.String())
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

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func countBackends(t *testing.T, appName string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.SuperuserURL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", appName).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestGracefulShutdown sends SIGTERM while a request is in flight: the
// request completes, the process exits 0 and leaves no backend behind.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	addr := freeAddr(t)
	appName := fmt.Sprintf("chatql-shutdown-%d", time.Now().UnixNano())

	cmd := exec.Command(bin)
	cmd.Dir = t.TempDir()
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"DATABASE_URL=" + pgtest.NewDatabase(t),
		"LISTEN_ADDR=" + addr,
		"DB_APPLICATION_NAME=" + appName,
		"DB_POOL_SIZE=2",
		"JWT_SECRET=" + testSecret,
	}
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	base := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server never became ready; logs:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := countBackends(t, appName); n == 0 {
		t.Fatal("server holds no connection after readiness check: application_name not applied?")
	}

	// A request in flight: headers sent, the body still arriving.
	query := `{"query":"{ poolStatus { status checkedOut } }"}`
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /query HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", addr, len(query), query[:10])
	time.Sleep(100 * time.Millisecond) // let the server start reading the request

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The listener closes, so new connections are refused...
	refused := false
	for range 100 {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			refused = true
			break
		}
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
	if !refused {
		t.Error("server still accepts connections after SIGTERM")
	}
	// ...while the request in flight completes.
	if _, err := io.WriteString(conn, query[10:]); err != nil {
		t.Fatalf("finish request body: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 200")) || !bytes.Contains(resp, []byte(`"poolStatus"`)) {
		t.Fatalf("in-flight request did not complete: %s", resp)
	}

	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v; logs:\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("process did not exit; logs:\n%s", logs.String())
	}
	// A backend leaves pg_stat_activity a moment after its client hangs up.
	for start := time.Now(); countBackends(t, appName) != 0; time.Sleep(20 * time.Millisecond) {
		if time.Since(start) > 2*time.Second {
			t.Fatalf("%d backends of the stopped process remain", countBackends(t, appName))
		}
	}
}

// startProcess runs the binary with env in dir and waits for readiness.
type process struct {
	addr   string
	cmd    *exec.Cmd
	logs   *syncBuffer
	exited chan error
}

func startProcess(t *testing.T, bin, dir string, env ...string) *process {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "LISTEN_ADDR=" + addr}, env...)
	p := &process{addr: addr, cmd: cmd, logs: &syncBuffer{}, exited: make(chan error, 1)}
	cmd.Stderr = p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case err := <-p.exited:
			t.Fatalf("process exited before ready: %v; logs:\n%s", err, p.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("never ready; logs:\n%s", p.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *process) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		if err != nil && sig != os.Kill {
			t.Fatalf("exit after %v: %v; logs:\n%s", sig, err, p.logs.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("no exit after %v; logs:\n%s", sig, p.logs.String())
	}
}

// TestLocalPostgres is `make run` without DATABASE_URL: the first run
// creates the cluster, migrates and seeds; Ctrl-C stops the cluster; the
// next run reuses the data without seeding again; a killed run's orphaned
// server does not block the one after.
func TestLocalPostgres(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
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

	first := startProcess(t, bin, dir)
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

	second := startProcess(t, bin, dir)
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
	body, _ := json.Marshal(map[string]string{"query": graph.InboxQuery})
	req, _ := http.NewRequest(http.MethodPost, "http://"+second.addr+"/query", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", header[1])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var inbox struct {
		Data struct {
			Conversations struct{ Edges []any }
		}
		Extensions struct{ DB map[string]any }
	}
	if err := json.Unmarshal(raw, &inbox); err != nil || resp.StatusCode != 200 || len(inbox.Data.Conversations.Edges) == 0 || inbox.Extensions.DB == nil {
		t.Errorf("Inbox with the demo header: %d %s", resp.StatusCode, raw)
	}
	second.stop(t, os.Kill) // a crash: the cluster is orphaned

	third := startProcess(t, bin, dir)
	third.stop(t, syscall.SIGTERM)
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("postmaster.pid still there after SIGTERM: %v", err)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestMigrateCommand: `chatql migrate` applies the schema and exits 0.
func TestMigrateCommand(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	ctx := context.Background()
	name := fmt.Sprintf("migrate_%d", time.Now().UnixNano())
	admin, err := pgx.Connect(ctx, pgtest.SuperuserURL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	defer admin.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)")

	cmd := exec.Command(bin, "migrate")
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + pgtest.SuperuserURL(name), "JWT_SECRET=" + testSecret}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
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
