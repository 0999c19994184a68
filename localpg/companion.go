package localpg

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
)

// What a program that runs beside a cluster (a pooler in front of it, in
// the tests) needs to run as the cluster's server does and to log in to it.

// Superuser returns the cluster's superuser and its password.
func (c *Cluster) Superuser() (name, password string) { return superuser, c.password }

// Credential is what a companion program must run with: the account the
// server runs as when this process is root, else nil (this process's own).
func (c *Cluster) Credential() *syscall.Credential {
	if c.runAs == nil {
		return nil
	}
	return &syscall.Credential{Uid: c.runAs.uid, Gid: c.runAs.gid}
}

// PrepareDir creates dir (mode 0700, its parent 0755) for a companion
// program, owned by the server's account, and checks that the account can
// reach it.
func (c *Cluster) PrepareDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := c.runAs.chown(dir); err != nil {
		return err
	}
	if c.runAs != nil {
		return c.runAs.checkTraversable(dir)
	}
	return nil
}

// WritePrivateFile writes content to path, mode 0600, owned by the
// server's account.
func (c *Cluster) WritePrivateFile(path, content string) error {
	return writePrivateFile(path, content, c.runAs)
}

// FreePort asks the kernel for a free port on 127.0.0.1; another process
// may take it before the caller binds it.
func FreePort() (int, error) { return freePort() }
