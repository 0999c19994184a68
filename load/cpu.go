package load

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// CPU time per request is read from /proc (Linux): it stays meaningful on
// a machine shared with other work, where requests per second do not.

// clockTick is the unit of /proc/<pid>/stat's times (USER_HZ).
const clockTick = 10 * time.Millisecond

// procStat returns a process's parent and its user plus system CPU time.
func procStat(pid int) (ppid int, cpu time.Duration, err error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name is in parentheses and may hold spaces: the fields
	// counted from 3 (state) start after the last ')'.
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ppid, _ = strconv.Atoi(f[1])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return ppid, time.Duration(utime+stime) * clockTick, nil
}

// ProcessCPU is the CPU time pid has used so far.
func ProcessCPU(pid int) (time.Duration, error) {
	_, cpu, err := procStat(pid)
	return cpu, err
}

// TreeCPU is the CPU time used so far by pid and its live children: for
// the postmaster, every backend and background process of the cluster.
func TreeCPU(pid int) (time.Duration, error) {
	total, err := ProcessCPU(pid)
	if err != nil {
		return 0, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, cpu, err := procStat(child); err == nil && ppid == pid {
			total += cpu
		}
	}
	return total, nil
}

// PostmasterPID finds the postmaster of conn's server, which must run on
// this machine: the parent of conn's backend.
func PostmasterPID(ctx context.Context, conn *pgx.Conn) (int, error) {
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		return 0, err
	}
	ppid, _, err := procStat(backend)
	return ppid, err
}

// CPUMeter measures the CPU time a run costs a server process and the
// database cluster; a zero pid is not measured.
type CPUMeter struct {
	ServerPID, PostmasterPID int
}

// Start reads both clocks; the returned function reads them again and
// records the differences on r.
func (m CPUMeter) Start() func(r *Result) {
	srv0, _ := m.read(m.ServerPID, ProcessCPU)
	pg0, _ := m.read(m.PostmasterPID, TreeCPU)
	return func(r *Result) {
		if srv1, ok := m.read(m.ServerPID, ProcessCPU); ok {
			r.ServerCPU = srv1 - srv0
		}
		if pg1, ok := m.read(m.PostmasterPID, TreeCPU); ok {
			r.PostgresCPU = pg1 - pg0
		}
	}
}

func (m CPUMeter) read(pid int, f func(int) (time.Duration, error)) (time.Duration, bool) {
	if pid == 0 {
		return 0, false
	}
	d, err := f(pid)
	return d, err == nil
}
