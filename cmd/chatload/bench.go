package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"chatql/load"
	"chatql/localpg"
)

// bench runs the whole measurement on a machine with nothing running: a
// throwaway PostgreSQL, the load data set, and a chatql process with the
// Supabase session-mode settings (size 3, overflow 2), then the matrix.
func bench(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("chatload bench", flag.ContinueOnError)
	var o options
	o.register(fs)
	binary := fs.String("chatql", "bin/chatql", "the chatql binary to measure")
	poolSize := fs.Int("pool-size", 3, "DB_POOL_SIZE of the server (and the ceiling's pool)")
	overflow := fs.Int("max-overflow", 2, "DB_MAX_OVERFLOW of the server (and the ceiling's pool)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	bin, err := binaryPath(*binary)
	if err != nil {
		return err
	}
	dbURL, stopDB, err := privateDatabase(ctx, "chatload-bench-", out)
	if err != nil {
		return err
	}
	defer stopDB()

	o.jwtSecret = newSecret()
	env := []string{
		"DATABASE_URL=" + dbURL, "JWT_SECRET=" + o.jwtSecret,
		fmt.Sprintf("DB_POOL_SIZE=%d", *poolSize), fmt.Sprintf("DB_MAX_OVERFLOW=%d", *overflow),
		"DB_POOL_TIMEOUT=30", "DB_POOL_RECYCLE=1800", "DB_ECHO=false",
		"LOG_LEVEL=warn", "GRAPHQL_DB_STATS=false",
	}
	// The same binary twice: as configured (admission on, the defaults)
	// and with admission off, the baseline the fairness goals are
	// measured against. Each has its own pool of the same size; they run
	// one after the other, never at once.
	on, err := startServer(ctx, bin, "chatql-bench", env)
	if err != nil {
		return err
	}
	defer on.stop()
	off, err := startServer(ctx, bin, "chatql-bench-off", append(env, "ADMISSION_PER_USER=0"))
	if err != nil {
		return err
	}
	defer off.stop()
	fmt.Fprintf(out, "chatql (%s) with DB_POOL_SIZE=%d DB_MAX_OVERFLOW=%d on a private PostgreSQL, admission on (the defaults) and off (ADMISSION_PER_USER=0); %s per run\n\n", *binary, *poolSize, *overflow, o.duration)
	on.mode, off.mode = load.ModeChatQL, load.ModeNoAdmission
	return measure(ctx, o, []target{on, off}, dbURL, out)
}

// privateDatabase starts a throwaway PostgreSQL cluster in a new
// temporary directory named after prefix (as an unprivileged user when we
// are root), seeds it with the load data set and checkpoints it; stop
// stops it and removes the directory.
func privateDatabase(ctx context.Context, prefix string, out io.Writer) (dbURL string, stop func(), err error) {
	root, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	stop = func() { _ = os.RemoveAll(root) }
	// The cluster runs as an unprivileged user when we are root.
	if err := os.Chmod(root, 0o755); err != nil {
		stop()
		return "", nil, err
	}
	cluster, err := localpg.Open(ctx, localpg.Options{
		Dir: filepath.Join(root, "postgres"), Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Settings: map[string]string{"max_connections": "100", "shared_buffers": "256MB"},
	})
	if err != nil {
		stop()
		return "", nil, err
	}
	if err := cluster.Start(ctx); err != nil {
		stop()
		return "", nil, err
	}
	stop = func() {
		_ = cluster.Stop(context.Background())
		_ = os.RemoveAll(root)
	}
	if err := cluster.EnsureDatabase(ctx, "chatql"); err != nil {
		stop()
		return "", nil, err
	}
	dbURL = cluster.URL("chatql")
	if err := seedDatabase(ctx, dbURL, out); err != nil {
		stop()
		return "", nil, err
	}
	if err := checkpoint(ctx, dbURL); err != nil {
		stop()
		return "", nil, err
	}
	return dbURL, stop, nil
}

// checkpoint writes out what seeding left dirty in shared buffers, so
// that the checkpoint due five minutes after the cluster started does not
// write it during a run and count as PostgreSQL's CPU per request there.
func checkpoint(ctx context.Context, dbURL string) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// startServer starts the chatql binary with env, as application app on a
// free address, and waits until it is ready.
func startServer(ctx context.Context, bin, app string, env []string) (target, error) {
	addr, err := freeAddr()
	if err != nil {
		return target{}, err
	}
	server := exec.CommandContext(ctx, bin)
	server.Env = append(os.Environ(), env...)
	server.Env = append(server.Env, "LISTEN_ADDR="+addr, "DB_APPLICATION_NAME="+app)
	server.Stdout, server.Stderr = os.Stderr, os.Stderr
	server.Cancel = func() error { return server.Process.Signal(syscall.SIGTERM) }
	if err := server.Start(); err != nil {
		return target{}, fmt.Errorf("start chatql: %w", err)
	}
	t := target{baseURL: "http://" + addr, app: app, pid: server.Process.Pid, stop: func() {
		_ = server.Process.Signal(syscall.SIGTERM)
		_ = server.Wait()
	}}
	ready := func() (*http.Response, error) { return http.Get(t.baseURL + "/health/ready") }
	if err := waitReady(ctx, "chatql", ready, 30*time.Second); err != nil {
		t.stop()
		return target{}, err
	}
	return t, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitReady polls probe until it answers 200, for at most timeout; name
// says what did not become ready.
func waitReady(ctx context.Context, name string, probe func() (*http.Response, error), timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := probe()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not become ready within %s", name, timeout)
}
