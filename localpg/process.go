package localpg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// account is the unprivileged user that initdb, pg_ctl and the server run as
// when this process is root.
type account struct {
	name     string
	uid, gid uint32
}

// serverAccount returns the user to run the PostgreSQL programs as: nil when
// this process is not root (they run as us), else "postgres", or "nobody"
// where no postgres user exists.
func serverAccount() (*account, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err := strconv.ParseUint(u.Uid, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("user %s: uid %q: %w", name, u.Uid, err)
		}
		gid, err := strconv.ParseUint(u.Gid, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("user %s: gid %q: %w", name, u.Gid, err)
		}
		return &account{name: name, uid: uint32(uid), gid: uint32(gid)}, nil
	}
	return nil, errors.New("running as root, and neither a postgres nor a nobody user exists to run the server as (PostgreSQL refuses to run as root)")
}

// chown gives path to the account; a nil account (not root) leaves it alone.
func (a *account) chown(path string) error {
	if a == nil {
		return nil
	}
	if err := os.Chown(path, int(a.uid), int(a.gid)); err != nil {
		return fmt.Errorf("give %s to user %s: %w", path, a.name, err)
	}
	return nil
}

// checkTraversable reports the first directory from dir up to / that the
// account cannot enter. Only the primary group counts: the programs are
// started with no supplementary groups.
func (a *account) checkTraversable(dir string) error {
	for {
		fi, err := os.Stat(dir)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil // not a Unix file system: nothing we can check
		}
		perm := fi.Mode().Perm()
		var search bool
		switch {
		case st.Uid == a.uid:
			search = perm&0o100 != 0
		case st.Gid == a.gid:
			search = perm&0o010 != 0
		default:
			search = perm&0o001 != 0
		}
		if !search {
			return fmt.Errorf("directory %s (mode %v) is not traversable by user %s, which the server runs as: chmod o+x %s, or choose a data directory elsewhere", dir, perm, a.name, dir)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil
		}
		dir = parent
	}
}

// command prepares one of the PostgreSQL programs.
//
// It runs as the server account when we are root, and in a process group of
// its own, so that a Ctrl-C aimed at chatql's terminal does not reach the
// server it starts: Stop shuts the server down in order instead. The working
// directory is / because ours may not be reachable by the server account
// (root's home is 0700), and the programs resolve paths from it.
func (c *Cluster) command(ctx context.Context, program string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, program), args...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if c.runAs != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: c.runAs.uid, Gid: c.runAs.gid}
	}
	// pg_ctl start sends the server's output to the log file, so nothing
	// should hold our pipes once pg_ctl exits; this bounds the wait if
	// something does.
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// run runs a PostgreSQL program and returns its combined output, trimmed, for
// error messages.
func (c *Cluster) run(ctx context.Context, program string, args ...string) (string, error) {
	out, err := c.command(ctx, program, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
