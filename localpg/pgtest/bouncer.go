package pgtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"chatql/localpg"

	"github.com/jackc/pgx/v5"
)

// ErrBouncerNotInstalled is returned (wrapped) by StartBouncer when no
// pgbouncer program can be found. Like ErrNotInstalled, its message is the
// fix, on one line.
var ErrBouncerNotInstalled = errors.New("pgbouncer not found on PATH or in /usr/sbin, /usr/local/bin, /opt/homebrew/bin: install it (apt-get install pgbouncer, or brew install pgbouncer)")

// bouncerStopTimeout bounds the wait for pgbouncer to exit after SIGTERM
// before it is killed.
const bouncerStopTimeout = 10 * time.Second

// bouncerReadyTimeout bounds the wait for a started pgbouncer to answer.
const bouncerReadyTimeout = 30 * time.Second

// BouncerOptions configure a Bouncer.
type BouncerOptions struct {
	// Dir is the working directory for pgbouncer.ini, userlist.txt, the log
	// and the pid file. It is created if missing, and given to the account
	// pgbouncer runs as when this process is root; every directory above it
	// must be traversable by that account.
	Dir string
	// Backend is the cluster PgBouncer fronts, reached on 127.0.0.1 at its
	// port as its superuser. It must be started.
	Backend *localpg.Cluster
	// PoolMode is PgBouncer's pool_mode: "session" or "transaction".
	PoolMode string
	// MaxClientConn is max_client_conn: client connections beyond it are
	// refused with "no more connections allowed (max_client_conn)".
	MaxClientConn int
	// DefaultPoolSize is default_pool_size: server connections per
	// database and user pair.
	DefaultPoolSize int
	// Port is the TCP port on 127.0.0.1; 0 picks a free one.
	Port int
	// Logger receives lifecycle messages; nil means slog.Default().
	Logger *slog.Logger
}

// Bouncer is a PgBouncer in front of a local cluster, for tests that need a
// pooler with a client limit between them and the database, as on Supabase.
//
// It runs in the foreground as a child of this process (so that Stop can
// wait for it), in a process group of its own, listening only on 127.0.0.1
// with no unix socket. Its databases section is a wildcard, so every
// database of the cluster, including ones created after the start, can be
// reached through it under its own name. The admin console is the database
// "pgbouncer" (simple query protocol only): PgBouncer never refuses it, but
// while open it counts towards max_client_conn, so a test of that limit
// must not hold one. Stop is idempotent and safe for concurrent use.
type Bouncer struct {
	dir     string
	port    int
	backend *localpg.Cluster
	logFile string
	logger  *slog.Logger
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd.Wait has returned
	waitErr error         // what cmd.Wait returned; read after exited is closed

	stopOnce sync.Once
	stopErr  error
}

// StartBouncer writes the configuration into opts.Dir, starts pgbouncer on
// it and returns once it accepts connections (a query on the admin console
// succeeds). If pgbouncer exits or does not come up within bouncerReadyTimeout it is
// stopped, and the error quotes its output.
//
// When this process is root, pgbouncer (which refuses to run as root) runs
// as the account the cluster's server runs as.
func StartBouncer(ctx context.Context, opts BouncerOptions) (*Bouncer, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("start pgbouncer: %w", err)
	}
	program, err := findBouncer()
	if err != nil {
		return nil, fmt.Errorf("start pgbouncer: %w", err)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("start pgbouncer: directory %q: %w", opts.Dir, err)
	}
	if err := opts.Backend.PrepareDir(dir); err != nil {
		return nil, fmt.Errorf("start pgbouncer in %s: %w", dir, err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}

	// A port we picked may be taken by someone else before pgbouncer binds
	// it; then pgbouncer exits at once, and another one is tried.
	attempts := 1
	if opts.Port == 0 {
		attempts = 3
	}
	for attempt := 1; ; attempt++ {
		port := opts.Port
		if port == 0 {
			if port, err = localpg.FreePort(); err != nil {
				return nil, fmt.Errorf("start pgbouncer: %w", err)
			}
		}
		b := &Bouncer{
			dir:     dir,
			port:    port,
			backend: opts.Backend,
			logFile: filepath.Join(dir, "pgbouncer.log"),
			logger:  logger,
			exited:  make(chan struct{}),
		}
		portTaken, err := b.start(ctx, program, opts)
		if err == nil {
			logger.Info("pgbouncer started", "dir", dir, "port", port, "pool_mode", opts.PoolMode,
				"max_client_conn", opts.MaxClientConn, "default_pool_size", opts.DefaultPoolSize)
			return b, nil
		}
		if !portTaken || attempt == attempts || ctx.Err() != nil {
			return nil, err
		}
		logger.Warn("port taken before pgbouncer could bind it; trying another", "port", port)
	}
}

func (o BouncerOptions) validate() error {
	switch {
	case o.Dir == "":
		return errors.New("BouncerOptions.Dir is empty")
	case o.Backend == nil:
		return errors.New("BouncerOptions.Backend is nil")
	case o.Backend.Port() == 0:
		return errors.New("the backend cluster has no port: start it first")
	case o.PoolMode != "session" && o.PoolMode != "transaction":
		return fmt.Errorf("pool mode %q: want session or transaction", o.PoolMode)
	case o.MaxClientConn < 1:
		return fmt.Errorf("max_client_conn %d: must be at least 1", o.MaxClientConn)
	case o.DefaultPoolSize < 1:
		return fmt.Errorf("default_pool_size %d: must be at least 1", o.DefaultPoolSize)
	case o.Port < 0 || o.Port > 65535:
		return fmt.Errorf("port %d out of range", o.Port)
	}
	return nil
}

// findBouncer returns the path of the pgbouncer program. Distributions put
// it in sbin, which is not on every user's PATH.
func findBouncer() (string, error) {
	if path, err := exec.LookPath("pgbouncer"); err == nil {
		return path, nil
	}
	for _, path := range []string{"/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer", "/usr/local/bin/pgbouncer", "/opt/homebrew/bin/pgbouncer"} {
		if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return path, nil
		}
	}
	return "", ErrBouncerNotInstalled
}

// start writes the configuration, starts the process and waits for it to be
// ready. portTaken reports that it exited because its port was in use.
func (b *Bouncer) start(ctx context.Context, program string, opts BouncerOptions) (portTaken bool, err error) {
	ini := filepath.Join(b.dir, "pgbouncer.ini")
	userlist := filepath.Join(b.dir, "userlist.txt")
	// Private to the account: userlist.txt holds the password, and the
	// rest need not be anyone else's business either.
	user, password := b.backend.Superuser()
	if err := b.backend.WritePrivateFile(userlist, userlistQuote(user)+" "+userlistQuote(password)+"\n"); err != nil {
		return false, fmt.Errorf("start pgbouncer: write %s: %w", userlist, err)
	}
	if err := b.backend.WritePrivateFile(ini, b.config(opts, userlist)); err != nil {
		return false, fmt.Errorf("start pgbouncer: write %s: %w", ini, err)
	}
	if err := b.backend.WritePrivateFile(b.logFile, ""); err != nil {
		return false, fmt.Errorf("start pgbouncer: create %s: %w", b.logFile, err)
	}

	// Not exec.CommandContext: the process must outlive the start's
	// context, and only Stop ends it.
	cmd := exec.Command(program, ini)
	cmd.Dir = "/" // ours may not be reachable by the account (see command)
	// Its own process group (a Ctrl-C meant for us is not its), but ended
	// with us: if this process dies without Stop (a test binary killed or
	// timed out), the kernel sends it SIGTERM. Go sets the signal after
	// switching to the credential, which would otherwise clear it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM, Credential: b.backend.Credential()}
	// In the foreground pgbouncer logs to stderr as well as to its log
	// file, and a bad configuration is reported on stderr only (the log
	// file is not open yet), so the start of stderr is kept for the error
	// message of a failed start.
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return false, fmt.Errorf("start pgbouncer: %w", err)
	}
	b.cmd = cmd
	go func() {
		b.waitErr = cmd.Wait()
		close(b.exited)
	}()

	if err := b.waitReady(ctx); err != nil {
		stopErr := b.Stop()
		output := stderr.tail(20)
		return strings.Contains(output, "Address already in use"), errors.Join(
			fmt.Errorf("start pgbouncer on 127.0.0.1:%d: %w\npgbouncer's output:\n%s",
				b.port, err, output),
			stopErr)
	}
	return false, nil
}

// config renders pgbouncer.ini.
//
// Authentication: clients authenticate to PgBouncer with auth_type plain
// against userlist.txt, which holds the cluster's superuser password in
// clear; with a clear-text password PgBouncer can itself log in to the
// cluster, whose pg_hba asks for scram-sha-256. Plain sends the password
// unencrypted, which is acceptable only because everything here is on
// 127.0.0.1 and throwaway.
//
// Startup parameters: pgx sends user, database and, when set,
// application_name, all of which PgBouncer handles itself (it forwards
// application_name to the server connection it assigns), so nothing needs
// ignore_startup_parameters.
func (b *Bouncer) config(opts BouncerOptions, userlist string) string {
	user, _ := b.backend.Superuser()
	// DISCARD ALL returns a server connection to a clean state when its
	// session-mode client goes away. In transaction mode PgBouncer does not
	// run the reset query (clients may not use session state there).
	resetQuery := "DISCARD ALL"
	if opts.PoolMode == "transaction" {
		resetQuery = ""
	}
	settings := []string{
		"[databases]",
		fmt.Sprintf("* = host=127.0.0.1 port=%d", opts.Backend.Port()),
		"",
		"[pgbouncer]",
		"listen_addr = 127.0.0.1",
		fmt.Sprintf("listen_port = %d", b.port),
		"unix_socket_dir =",
		"auth_type = plain",
		"auth_file = " + userlist,
		"admin_users = " + user,
		"pool_mode = " + opts.PoolMode,
		fmt.Sprintf("max_client_conn = %d", opts.MaxClientConn),
		fmt.Sprintf("default_pool_size = %d", opts.DefaultPoolSize),
		"min_pool_size = 0",
		"reserve_pool_size = 0",
		"server_reset_query = " + resetQuery,
		// The default of 15 s would stall a test for that long after one
		// failed login to the cluster (a restart, say).
		"server_login_retry = 1",
		"logfile = " + b.logFile,
		"pidfile = " + filepath.Join(b.dir, "pgbouncer.pid"),
		"",
	}
	return strings.Join(settings, "\n")
}

// userlistQuote quotes s for userlist.txt: in double quotes, with double
// quotes doubled.
func userlistQuote(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// waitReady waits, up to bouncerReadyTimeout, for the admin console to answer a
// query. It gives up at once if the process exits: then whatever holds the
// port (if anything does) is not PgBouncer, and a connection attempt could
// wait for an answer that never comes. The admin console is exempt from
// max_client_conn, so this works for any limit.
func (b *Bouncer) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, bouncerReadyTimeout)
	defer cancel()
	go func() {
		select {
		case <-b.exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	ticker := time.NewTicker(50 * time.Millisecond)
	defer ticker.Stop()
	for {
		err := b.pingAdmin(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
		case <-ticker.C:
			continue
		}
		select {
		case <-b.exited:
			return fmt.Errorf("pgbouncer exited: %v", b.waitErr)
		default:
			return fmt.Errorf("pgbouncer does not accept connections: %w", err)
		}
	}
}

func (b *Bouncer) pingAdmin(ctx context.Context) error {
	cfg, err := pgx.ParseConfig(b.URL("pgbouncer"))
	if err != nil {
		return err
	}
	// The admin console speaks only the simple query protocol.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	// Another test's PgBouncer may hold the port we picked (ours then
	// fails to bind it and exits), and it answers the same credentials:
	// only ours logs to our log file.
	rows, err := conn.Query(ctx, "SHOW CONFIG")
	if err != nil {
		return err
	}
	logfile := ""
	for rows.Next() {
		if values := rows.RawValues(); len(values) >= 2 && string(values[0]) == "logfile" {
			logfile = string(values[1])
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if logfile != b.logFile {
		return fmt.Errorf("another PgBouncer (logging to %q) answers on port %d", logfile, b.port)
	}
	return nil
}

// URL returns a postgres:// URL for database dbname through the bouncer, as
// the cluster's superuser with its password, with sslmode=disable. dbname
// "pgbouncer" is the admin console (simple query protocol only).
func (b *Bouncer) URL(dbname string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(b.backend.Superuser()),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port returns the TCP port the bouncer listens on, on 127.0.0.1.
func (b *Bouncer) Port() int { return b.port }

// LogFile returns the path of PgBouncer's log, for tests that want to quote
// it.
func (b *Bouncer) LogFile() string { return b.logFile }

// Stop shuts PgBouncer down and waits for it to exit: SIGTERM, and SIGKILL if
// it is still running after bouncerStopTimeout (since PgBouncer 1.23 SIGTERM
// waits for clients to leave). Client connections are cut. It is idempotent,
// and the error is that of the first call.
func (b *Bouncer) Stop() error {
	b.stopOnce.Do(func() { b.stopErr = b.stop() })
	return b.stopErr
}

func (b *Bouncer) stop() error {
	if b.cmd == nil {
		return nil
	}
	select {
	case <-b.exited:
		return nil // already gone (it failed to start, or was killed)
	default:
	}
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop pgbouncer (pid %d): %w", b.cmd.Process.Pid, err)
	}
	select {
	case <-b.exited:
		b.logger.Info("pgbouncer stopped", "port", b.port, "pid", b.cmd.Process.Pid)
		return nil
	case <-time.After(bouncerStopTimeout):
	}
	b.logger.Warn("pgbouncer did not exit on SIGTERM; killing it", "port", b.port, "pid", b.cmd.Process.Pid)
	if err := b.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill pgbouncer (pid %d): %w", b.cmd.Process.Pid, err)
	}
	<-b.exited
	return nil
}

// lockedBuffer collects a child's output; exec copies into it from a
// goroutine of its own while the error path may read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Keep the first 64 KiB only: it is for an error message.
	if room := 64<<10 - len(l.buf); room > 0 {
		l.buf = append(l.buf, p[:min(len(p), room)]...)
	}
	return len(p), nil
}

// tail returns the last n lines written.
func (l *lockedBuffer) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := strings.Split(strings.TrimRight(string(l.buf), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
