package docker

import (
	"context"
	"os/exec"
	"slices"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/docker/dockertest"
	"github.com/spiffe-hw/spire-hw/sim/dockerd"
	"github.com/spiffe-hw/spire-hw/sim/simtest"
)

// TestCgroupMove: a process in container A's cgroups is attested as A,
// after which A's cgroup is known and A's callers are answered without
// reading /proc; then it is moved into container B's and attested as B.
// That answer comes from the cgroup ID the kernel reports for the pidfd at
// that moment, not from what the first call learnt.
func TestCgroupMove(t *testing.T) {
	simtest.RequireRoot(t)
	d := dockerd.Start(t)
	A, _ := sleeper(t, d, map[string]string{"app": "A"})
	B, _ := sleeper(t, d, map[string]string{"app": "B"})
	a := newAttestor(t, Config{SocketPath: d.Host})
	if a.cgroups == nil {
		_, err := containerinfo.NewCgroupIndex(false)
		simtest.Skip(t, err.Error())
	}
	x := exec.Command("/bin/sleep", "60")
	if err := x.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = x.Process.Kill(); _ = x.Wait() })
	fd := pidfd(t, x.Process.Pid)
	ctx := context.Background()

	restore := dockertest.JoinCgroupsOf(t, x.Process.Pid, A.PID)
	for i := range 2 {
		sel, err := a.Attest(ctx, int32(x.Process.Pid), fd)
		if err != nil || !slices.Contains(strs(sel), "docker:label:app:A") {
			t.Fatalf("call %d in A's cgroups: %q, %v", i, strs(sel), err)
		}
	}
	// With /proc out of reach, only the cgroup ID can answer.
	a.procDir = t.TempDir()
	sel, err := a.Attest(ctx, int32(x.Process.Pid), fd)
	if err != nil || !slices.Contains(strs(sel), "docker:label:app:A") {
		t.Fatalf("A's cgroup not known by its ID: %q, %v", strs(sel), err)
	}
	restore()
	t.Cleanup(dockertest.JoinCgroupsOf(t, x.Process.Pid, B.PID))
	// B's cgroup is not known: the call must read /proc, and fail here.
	if sel, err := a.Attest(ctx, int32(x.Process.Pid), fd); err == nil {
		t.Fatalf("after the move into B's cgroups, answered %q without reading /proc", strs(sel))
	}
	a.procDir = "/proc"
	sel, err = a.Attest(ctx, int32(x.Process.Pid), fd)
	if got := strs(sel); err != nil || !slices.Contains(got, "docker:label:app:B") || slices.Contains(got, "docker:label:app:A") {
		t.Fatalf("after the move into B's cgroups: %q, %v", got, err)
	}
}
