package load

import (
	"os"
	"testing"
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
