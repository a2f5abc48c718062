package compare

import (
	"fmt"
	"os/exec"
	"runtime"
	"testing"

	"github.com/spiffe-hw/spire-hw/sim/simtest"
	"golang.org/x/sys/unix"
)

// TestCPUSplit: the server starts on its CPUs alone, every thread of the
// harness (including ones started after the split) runs on the others, and
// restore gives the harness every CPU back.
func TestCPUSplit(t *testing.T) {
	split, err := splitCPUs(1)
	if err != nil {
		t.Fatal(err)
	}
	if split == nil {
		simtest.Skip(t, "one CPU: nothing to split, the fleet scenario runs unpinned")
	}
	if split.server.Count() != 1 || split.harness.Count() != split.all.Count()-1 {
		t.Fatalf("split %d server CPUs and %d harness CPUs of %d", split.server.Count(), split.harness.Count(), split.all.Count())
	}
	for c := range len(split.all) * 64 {
		if split.server.IsSet(c) && split.harness.IsSet(c) {
			t.Fatalf("CPU %d given to both", c)
		}
	}
	if err := split.pinHarness(); err != nil {
		t.Fatal(err)
	}
	restored := false
	defer func() {
		if !restored {
			split.restore()
		}
	}()
	if got := runtime.GOMAXPROCS(0); got != split.harness.Count() {
		t.Errorf("harness GOMAXPROCS %d, want %d", got, split.harness.Count())
	}
	var cmd *exec.Cmd
	err = split.startServer(func() error {
		cmd = exec.Command("sleep", "30")
		return cmd.Start()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if got, err := affinity(cmd.Process.Pid); err != nil || got != split.server {
		t.Errorf("server affinity %v (%v), want %v", cpuList(&got), err, cpuList(&split.server))
	}
	// A thread started now, locked so that it stays a thread of its own.
	tid := make(chan int)
	release := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid <- unix.Gettid()
		<-release
	}()
	newTID := <-tid
	defer close(release)
	for _, id := range []int{0, newTID} {
		if got, err := affinity(id); err != nil || got != split.harness {
			t.Errorf("harness thread %d affinity %v (%v), want %v", id, cpuList(&got), err, cpuList(&split.harness))
		}
	}
	if err := split.restore(); err != nil {
		t.Fatal(err)
	}
	restored = true
	if got, err := affinity(0); err != nil || got != split.all {
		t.Errorf("after restore, affinity %v (%v), want %v", cpuList(&got), err, cpuList(&split.all))
	}
}

// affinity reads the CPUs a process may run on, for checking a split.
func affinity(pid int) (unix.CPUSet, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(pid, &set); err != nil {
		return set, fmt.Errorf("compare: affinity of %d: %w", pid, err)
	}
	return set, nil
}
