package load

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestTreeCPU: the CPU clocks read something for this process, and a
// process's tree includes the process itself.
func TestTreeCPU(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	x := 0
	for i := range 50_000_000 {
		x += i
	}
	_ = x
	own, err := ProcessCPU(os.Getpid())
	if err != nil || own <= 0 {
		t.Fatalf("ProcessCPU: %v, %v", own, err)
	}
	tree, err := TreeCPU(os.Getpid())
	if err != nil || tree < own {
		t.Fatalf("TreeCPU %v < own %v (%v)", tree, own, err)
	}
}

// TestTreeCPUKeepsExitedChildren: a child's CPU time stays in its
// parent's tree after it has exited and been waited for.
func TestTreeCPUKeepsExitedChildren(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	before, err := TreeCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command("sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done")
	if err := child.Run(); err != nil {
		t.Fatal(err)
	}
	used := child.ProcessState.UserTime() + child.ProcessState.SystemTime()
	if used < 50*time.Millisecond {
		t.Skipf("the child used only %v: too little to tell", used)
	}
	after, err := TreeCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// The clock ticks are 10 ms: allow one either side.
	if after-before < used-10*time.Millisecond {
		t.Fatalf("tree grew by %v, the exited child alone used %v", after-before, used)
	}
}
