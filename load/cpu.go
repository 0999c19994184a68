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
	ppid, cpu, _, err = procStatChildren(pid)
	return ppid, cpu, err
}

// procStatChildren is procStat with the CPU time of the process's
// children that have exited (and been waited for).
func procStatChildren(pid int) (ppid int, cpu, exited time.Duration, err error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	// The command name is in parentheses and may hold spaces: the fields
	// counted from 3 (state) start after the last ')'.
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 15 {
		return 0, 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ppid, _ = strconv.Atoi(f[1])
	tick := func(i int) time.Duration {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		return time.Duration(n) * clockTick
	}
	return ppid, tick(11) + tick(12), tick(13) + tick(14), nil
}

// ProcessCPU is the CPU time pid has used so far.
func ProcessCPU(pid int) (time.Duration, error) {
	_, cpu, err := procStat(pid)
	return cpu, err
}

// TreeCPU is the CPU time used so far by pid and its children, live or
// exited: for the postmaster, every backend and background process of the
// cluster. A child that exits moves from the live sum to pid's exited one;
// one reaped while the children are being read would be in neither (a
// pool closed at the end of a run took a backend's seconds of CPU with it,
// and a run's PostgreSQL CPU came out at a third of its neighbours'), so
// the reading is taken again until pid's exited sum is the same after the
// children as before them.
func TreeCPU(pid int) (time.Duration, error) {
	for range 10 {
		_, _, exited, err := procStatChildren(pid)
		if err != nil {
			return 0, err
		}
		live, err := childrenCPU(pid)
		if err != nil {
			return 0, err
		}
		_, ownAfter, exitedAfter, err := procStatChildren(pid)
		if err != nil {
			return 0, err
		}
		if exitedAfter == exited {
			return ownAfter + exitedAfter + live, nil
		}
	}
	return 0, fmt.Errorf("process %d: children kept exiting while read", pid)
}

// childrenCPU sums the CPU time of pid's live children.
func childrenCPU(pid int) (time.Duration, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var total time.Duration
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
