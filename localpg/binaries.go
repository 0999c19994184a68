package localpg

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrNotInstalled is returned (wrapped) by FindBinaries and Open when the
// PostgreSQL server binaries cannot be found. Its message is the fix, on one
// line, because it is the first thing a developer on a fresh machine sees.
var ErrNotInstalled = errors.New("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in /usr/lib/postgresql/*/bin: install them (apt-get install postgresql, or brew install postgresql) or set DATABASE_URL")

// FindBinaries returns the directory holding initdb, pg_ctl and postgres.
//
// PATH wins, so that a developer can choose a version by putting it first.
// Distributions rarely put the server binaries on PATH (Debian keeps them in
// /usr/lib/postgresql/<version>/bin, Homebrew in its opt directory), so those
// places are searched next and the highest version found there is used.
//
// All three programs must sit in one directory: initdb runs the postgres
// binary that sits next to it, so mixing directories would mix versions.
func FindBinaries() (string, error) {
	if initdb, err := exec.LookPath("initdb"); err == nil {
		candidates := []string{filepath.Dir(initdb)}
		// /usr/local/bin/initdb may be a symlink into a versioned directory
		// that holds the rest.
		if target, err := filepath.EvalSymlinks(initdb); err == nil {
			candidates = append(candidates, filepath.Dir(target))
		}
		for _, dir := range candidates {
			if hasBinaries(dir) {
				return filepath.Abs(dir)
			}
		}
	}

	var best string
	var bestVersion [2]int
	for _, pattern := range []string{
		"/usr/lib/postgresql/*/bin",
		"/usr/local/opt/postgresql*/bin",
		"/opt/homebrew/opt/postgresql*/bin",
	} {
		// Glob fails only on a malformed pattern, and these are constants.
		matches, _ := filepath.Glob(pattern)
		for _, dir := range matches {
			if !hasBinaries(dir) {
				continue
			}
			v := dirVersion(dir)
			if best == "" || v[0] > bestVersion[0] || (v[0] == bestVersion[0] && v[1] > bestVersion[1]) {
				best, bestVersion = dir, v
			}
		}
	}
	if best == "" {
		return "", ErrNotInstalled
	}
	return best, nil
}

// hasBinaries reports whether dir holds executable initdb, pg_ctl and postgres.
func hasBinaries(dir string) bool {
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// dirVersion reads the PostgreSQL version out of a bin directory's parent:
// "15" in /usr/lib/postgresql/15/bin, "16" in /opt/homebrew/opt/postgresql@16/bin,
// "9.6" in /usr/lib/postgresql/9.6/bin. An unversioned name counts as 0.
func dirVersion(binDir string) [2]int {
	name := filepath.Base(filepath.Dir(binDir))
	name = strings.TrimPrefix(name, "postgresql")
	name = strings.TrimPrefix(name, "@")
	majorText, minorText, _ := strings.Cut(name, ".")
	major, err := strconv.Atoi(majorText)
	if err != nil {
		return [2]int{}
	}
	minor, _ := strconv.Atoi(minorText) // absent or odd: 0
	return [2]int{major, minor}
}
