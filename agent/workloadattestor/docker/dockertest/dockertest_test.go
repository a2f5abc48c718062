package dockertest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/spiffe-hw/spire-hw/sim/simtest"
)

func v2Path(t *testing.T, pid int) string {
	t.Helper()
	hs, err := hierarchies(pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if h.key == "0::" {
			return h.path
		}
	}
	t.Fatalf("pid %d has no cgroup v2 line", pid)
	return ""
}

// A process joins another's cgroup v2 cgroup and is moved back where it
// was.
func TestJoinAndRestore(t *testing.T) {
	simtest.RequireRoot(t)
	mounts, err := cgroupMounts()
	if err != nil {
		t.Fatal(err)
	}
	root := mounts["0::"]
	if root == "" {
		simtest.Skip(t, "no cgroup v2 hierarchy mounted")
	}
	start := func() *exec.Cmd {
		c := exec.Command("/bin/sleep", "60")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
		return c
	}
	a, b := start(), start()
	orig := v2Path(t, b.Process.Pid)
	// a goes into a cgroup of its own, beside the one it was in.
	dir := filepath.Join(root, filepath.Dir(v2Path(t, a.Process.Pid)), fmt.Sprintf("dockertest-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(dir) })
	if err := write(dir, a.Process.Pid); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = write(filepath.Join(root, orig), a.Process.Pid) })
	want := v2Path(t, a.Process.Pid)

	restore := JoinCgroupsOf(t, b.Process.Pid, a.Process.Pid)
	if got := v2Path(t, b.Process.Pid); got != want {
		t.Fatalf("joined: %s, want %s", got, want)
	}
	restore()
	if got := v2Path(t, b.Process.Pid); got != orig {
		t.Fatalf("restored: %s, want %s", got, orig)
	}
}
