package localpg

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// superuser is the role initdb creates; every URL connects as it.
const superuser = "postgres"

// Options configure a Cluster.
type Options struct {
	// Dir is the data directory. It is created and initialised with initdb
	// when it holds no PG_VERSION file. The password and log files live next
	// to it, as Dir+".password" and Dir+".log" (see the package doc).
	Dir string
	// Port is the TCP port on 127.0.0.1. 0 picks a free one at the first
	// Start and keeps it for the life of the Cluster, so that Restart comes
	// back on the same port.
	Port int
	// Logger receives lifecycle messages; nil means slog.Default().
	Logger *slog.Logger
	// Settings are extra postgresql.conf settings passed as -c name=value at
	// every start (e.g. "max_connections": "200"). listen_addresses, port and
	// unix_socket_directories are always the Cluster's own and cannot be
	// overridden here.
	Settings map[string]string
}

// Cluster is one local data directory and the server that runs on it.
//
// Every method is safe for concurrent use. Start, Stop and Restart are
// serialised with each other, and Port and URL wait for one in progress.
type Cluster struct {
	bin      string // directory holding initdb, pg_ctl and postgres
	dir      string // absolute data directory
	pwFile   string // dir + ".password"
	logFile  string // dir + ".log"
	password string
	settings []string // "name=value", sorted, passed as -c before our own
	logger   *slog.Logger
	// runAs is the unprivileged user the programs run as when this process
	// is root (Postgres refuses to run as root); nil otherwise.
	runAs *account

	mu   sync.Mutex // serialises Start, Stop and Restart; guards port
	port int
}

// settingName is what a postgresql.conf parameter name looks like. Names are
// checked because they end up in a shell command line (pg_ctl -o).
var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

// Open prepares a cluster in opts.Dir: it finds the binaries, creates the
// directory and, on first use, runs initdb (superuser "postgres",
// scram-sha-256 authentication, UTF8, C locale) with a random password that it
// stores in Dir+".password", mode 0600. It does not start the server.
func Open(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("open local postgres: Options.Dir is empty")
	}
	if opts.Port < 0 || opts.Port > 65535 {
		return nil, fmt.Errorf("open local postgres: port %d out of range", opts.Port)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("open local postgres: data directory %q: %w", opts.Dir, err)
	}
	var settings []string
	for name, value := range opts.Settings {
		if !settingName.MatchString(name) {
			return nil, fmt.Errorf("open local postgres: setting name %q is not a postgresql.conf parameter name", name)
		}
		settings = append(settings, name+"="+value)
	}
	slices.Sort(settings)

	bin, err := FindBinaries()
	if err != nil {
		return nil, fmt.Errorf("open local postgres: %w", err)
	}
	runAs, err := serverAccount()
	if err != nil {
		return nil, fmt.Errorf("open local postgres: %w", err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	c := &Cluster{
		bin:      bin,
		dir:      dir,
		pwFile:   dir + ".password",
		logFile:  dir + ".log",
		settings: settings,
		logger:   logger,
		runAs:    runAs,
		port:     opts.Port,
	}

	// The parent is made 0755 explicitly: MkdirAll would give intermediate
	// directories the data directory's 0700, which the server user cannot
	// traverse.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("open local postgres: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("open local postgres: %w", err)
	}
	if runAs != nil {
		if err := runAs.checkTraversable(filepath.Dir(dir)); err != nil {
			return nil, fmt.Errorf("open local postgres in %s: %w", dir, err)
		}
	}

	_, err = os.Stat(filepath.Join(dir, "PG_VERSION"))
	switch {
	case err == nil:
		if c.password, err = readPassword(c.pwFile); err != nil {
			return nil, fmt.Errorf("open local postgres in %s: %w (the cluster cannot be reached without it: remove %s to start over)", dir, err, dir)
		}
	case errors.Is(err, fs.ErrNotExist):
		if err := c.initdb(ctx); err != nil {
			return nil, fmt.Errorf("open local postgres in %s: %w", dir, err)
		}
	default:
		return nil, fmt.Errorf("open local postgres: %w", err)
	}
	return c, nil
}

// initdb creates the cluster in the (empty) data directory.
func (c *Cluster) initdb(ctx context.Context) error {
	// rand.Text is 26 base32 characters (130 bits): nothing that needs
	// escaping in a URL or a password file.
	password := rand.Text()
	// initdb reads the password from this same file (--pwfile), so it never
	// appears on a command line.
	if err := writePrivateFile(c.pwFile, password+"\n", c.runAs); err != nil {
		return fmt.Errorf("write password file: %w", err)
	}
	if err := os.Chmod(c.dir, 0o700); err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	if err := c.runAs.chown(c.dir); err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	out, err := c.run(ctx, "initdb",
		"--pgdata="+c.dir,
		"--username="+superuser,
		"--pwfile="+c.pwFile,
		"--auth=scram-sha-256",
		"--encoding=UTF8",
		"--no-locale",
	)
	if err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	c.password = password
	c.logger.Info("local postgres initialised", "dir", c.dir)
	return nil
}

// Port returns the server's TCP port on 127.0.0.1, or 0 when Options.Port was
// 0 and the cluster has not been started yet.
func (c *Cluster) Port() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.port
}

// Dir returns the absolute data directory.
func (c *Cluster) Dir() string { return c.dir }

// URL returns a postgres:// URL for database dbname as the superuser, with its
// password, host 127.0.0.1, the cluster's port and sslmode=disable. It is
// meaningful once the cluster has a port (see Port).
func (c *Cluster) URL(dbname string) string {
	return c.urlFor(c.Port(), dbname)
}

// urlFor is URL for callers that already hold c.mu.
func (c *Cluster) urlFor(port int, dbname string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(superuser, c.password),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

func readPassword(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	password := strings.TrimSpace(string(b))
	if password == "" {
		return "", fmt.Errorf("read password: %s is empty", path)
	}
	return password, nil
}

// writePrivateFile writes content to path with mode 0600, owned by owner
// (nil: by this process), replacing what was there.
func writePrivateFile(path, content string, owner *account) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	// The mode given to OpenFile applies only when the file is created.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return owner.chown(path)
}

// freePort asks the kernel for a free port on 127.0.0.1. Another process
// could take it before the server binds it; Start then fails with the
// server's "could not bind" in the log tail.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	return port, nil
}
