package localpg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// readyTimeout bounds the wait, after pg_ctl reports the server started, for
// it to accept a real connection.
const readyTimeout = 30 * time.Second

// Start starts the server, listening only on 127.0.0.1 at the cluster's port
// (picking a free one the first time when Options.Port is 0) with no unix
// socket, and returns once it accepts connections. The server's log goes to
// Dir+".log".
//
// A server already running on the data directory is taken to be an orphan of
// an earlier run that was killed, and is stopped first; a postmaster.pid whose
// process is gone, or is not a postgres, is removed so that it cannot block
// the start.
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()

	pid, err := c.runningPID()
	if err != nil {
		return fmt.Errorf("start local postgres in %s: %w", c.dir, err)
	}
	if pid != 0 {
		c.logger.Warn("stopping a local postgres left running by an earlier run", "dir", c.dir, "pid", pid)
		if out, err := c.run(ctx, "pg_ctl", "stop", "-D", c.dir, "-m", "fast", "-w"); err != nil {
			return fmt.Errorf("start local postgres in %s: stop the server left running (pid %d): %w\n%s", c.dir, pid, err, out)
		}
	}
	if err := c.start(ctx, "start"); err != nil {
		return err
	}
	c.logger.Info("local postgres started", "dir", c.dir, "port", c.port)
	return nil
}

// Restart stops the server (fast: sessions are disconnected) and starts it
// again on the same port, returning once it accepts connections. Tests use it
// to see how clients survive a database restart. A server that is not
// running is simply started.
func (c *Cluster) Restart(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()

	pid, err := c.runningPID()
	if err != nil {
		return fmt.Errorf("restart local postgres in %s: %w", c.dir, err)
	}
	action := "restart"
	if pid == 0 {
		action = "start"
	}
	if err := c.start(ctx, action); err != nil {
		return err
	}
	c.logger.Info("local postgres restarted", "dir", c.dir, "port", c.port)
	return nil
}

// Stop shuts the server down (fast: sessions are disconnected) and waits for
// it to exit. It is idempotent: a server that is not running is not an error.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()

	pid, err := c.runningPID()
	if err != nil {
		return fmt.Errorf("stop local postgres in %s: %w", c.dir, err)
	}
	if pid == 0 {
		return nil
	}
	if out, err := c.run(ctx, "pg_ctl", "stop", "-D", c.dir, "-m", "fast", "-w"); err != nil {
		return fmt.Errorf("stop local postgres in %s: pg_ctl stop: %w\n%s", c.dir, err, out)
	}
	c.logger.Info("local postgres stopped", "dir", c.dir, "pid", pid)
	return nil
}

// start runs pg_ctl start or restart and waits for a connection to succeed.
// The caller holds c.mu. If the server does not come up, it is stopped again
// rather than left half started, and the error quotes the server log.
func (c *Cluster) start(ctx context.Context, action string) error {
	if c.port == 0 {
		port, err := freePort()
		if err != nil {
			return fmt.Errorf("start local postgres in %s: %w", c.dir, err)
		}
		c.port = port
	}
	if err := c.prepareLogFile(); err != nil {
		return fmt.Errorf("start local postgres in %s: %w", c.dir, err)
	}

	args := []string{action, "-D", c.dir, "-l", c.logFile, "-w", "-o", c.serverOptions()}
	if action == "restart" {
		args = append(args, "-m", "fast")
	}
	out, err := c.run(ctx, "pg_ctl", args...)
	if err == nil {
		err = c.waitReady(ctx)
	}
	if err != nil {
		c.abandonStart(ctx)
		return fmt.Errorf("start local postgres in %s on port %d: pg_ctl %s: %w\n%s\nlast lines of %s:\n%s",
			c.dir, c.port, action, err, out, c.logFile, logTail(c.logFile, 20))
	}
	return nil
}

// serverOptions is the pg_ctl -o string: postgres command-line options, which
// pg_ctl hands to a shell, hence the quoting. The caller's settings come first
// so that ours, which keep the server private, win.
func (c *Cluster) serverOptions() string {
	var opts []string
	for _, s := range c.settings {
		opts = append(opts, "-c", shellQuote(s))
	}
	opts = append(opts,
		"-c", shellQuote("listen_addresses=127.0.0.1"),
		"-c", shellQuote("port="+strconv.Itoa(c.port)),
		"-c", shellQuote("unix_socket_directories="),
	)
	return strings.Join(opts, " ")
}

// shellQuote quotes s as one word for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// prepareLogFile creates the log file so that it can be given to the server
// account: pg_ctl opens it as that user, which may not write to the directory
// it is in.
func (c *Cluster) prepareLogFile() error {
	f, err := os.OpenFile(c.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("create log file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("create log file: %w", err)
	}
	return c.runAs.chown(c.logFile)
}

// waitReady waits, up to readyTimeout, for the server to run a query. pg_ctl
// -w already waited for the server to report itself ready; this proves the
// port, the password and the authentication method from the client's side.
func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	ticker := time.NewTicker(50 * time.Millisecond)
	defer ticker.Stop()
	url := c.urlFor(c.port, "postgres")
	for {
		err := ping(ctx, url)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("server does not accept connections on 127.0.0.1:%d: %w", c.port, err)
		case <-ticker.C:
		}
	}
}

func ping(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "SELECT 1")
	return err
}

// abandonStart stops a server whose start failed half way (pg_ctl timed out,
// or the connection check failed), so that no server is left running that
// nobody knows about. It runs even when ctx is cancelled, since cancelling is
// a common way for a start to fail.
func (c *Cluster) abandonStart(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if pid, err := c.runningPID(); err != nil || pid == 0 {
		return
	}
	if out, err := c.run(ctx, "pg_ctl", "stop", "-D", c.dir, "-m", "immediate", "-w"); err != nil {
		c.logger.Warn("could not stop local postgres after a failed start", "dir", c.dir, "err", err, "output", out)
	}
}

// runningPID returns the pid of the server running on the data directory, or
// 0 when there is none.
//
// postmaster.pid names the server's process on its first line and its data
// directory on its second. A server killed with SIGKILL, or a machine that
// crashed, leaves the file behind, and the pid in it may since have gone to
// an unrelated process, which would make pg_ctl refuse to start (or, for
// stop, signal that process). So the file counts only when its process is
// alive, is a postgres, and the directory it names is ours; otherwise it is
// removed here.
func (c *Cluster) runningPID() (int, error) {
	path := filepath.Join(c.dir, "postmaster.pid")
	content, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	lines := strings.Split(string(content), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(lines[0]))
	if err == nil && pid > 0 && len(lines) > 1 && c.isOurServer(pid, strings.TrimSpace(lines[1])) {
		return pid, nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("remove stale %s: %w", path, err)
	}
	c.logger.Info("removed stale postmaster.pid", "dir", c.dir, "pid", strings.TrimSpace(lines[0]))
	return 0, nil
}

// isOurServer reports whether process pid is alive, runs a postgres program,
// and dataDir (as recorded in postmaster.pid) is this cluster's directory.
func (c *Cluster) isOurServer(pid int, dataDir string) bool {
	// Signal 0 checks existence only; EPERM means it exists but is not ours
	// to signal.
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	program := processProgram(pid)
	if !strings.Contains(program, "postgres") && !strings.Contains(program, "postmaster") {
		return false
	}
	recorded, err := os.Stat(dataDir)
	if err != nil {
		return false
	}
	ours, err := os.Stat(c.dir)
	return err == nil && os.SameFile(recorded, ours)
}

// processProgram returns the base name of the program process pid runs (its
// argv[0]), or "" if that cannot be told. Linux answers through /proc; other
// systems, macOS among them, through ps.
func processProgram(pid int) string {
	var argv0 string
	if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
		argv0, _, _ = strings.Cut(string(cmdline), "\x00")
	} else if _, err := os.Stat("/proc/self"); err == nil {
		return "" // /proc works, so the process is gone
	} else if out, err := exec.Command("ps", "-o", "command=", "-p", strconv.Itoa(pid)).Output(); err == nil {
		fields := strings.Fields(string(out))
		if len(fields) > 0 {
			argv0 = fields[0]
		}
	}
	return filepath.Base(argv0)
}

// logTail returns the last n lines of the file at path, or a note saying why
// it cannot, for error messages. It reads only the end of the file: the log
// of a development cluster is appended to for as long as it is used.
func logTail(path string, n int) string {
	const window = 64 << 10
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read the log: %v)", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(cannot read the log: %v)", err)
	}
	offset := max(fi.Size()-window, 0)
	content := make([]byte, fi.Size()-offset)
	if _, err := f.ReadAt(content, offset); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Sprintf("(cannot read the log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(content), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
