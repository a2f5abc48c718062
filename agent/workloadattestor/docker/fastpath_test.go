package docker

import (
	"context"
	"os/exec"
	"slices"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/docker/dockertest"
	"github.com/spiffe-hw/spire-hw/sim/dockerd"
	"github.com/spiffe-hw/spire-hw/sim/simtest"
)

// TestCgroupMove: a process in container A's cgroups is attested as A,
// then moved into container B's and attested as B. The second answer comes
// from the cgroup ID the kernel reports for the pidfd at that moment, not
// from what the first call learnt.
func TestCgroupMove(t *testing.T) {
	simtest.RequireRoot(t)
	d := dockerd.Start(t)
	A, _ := sleeper(t, d, map[string]string{"app": "A"})
	B, _ := sleeper(t, d, map[string]string{"app": "B"})
	a := newAttestor(t, Config{SocketPath: d.Host})
	if a.cgroup2 == "" {
		simtest.Skip(t, "no cgroup v2 hierarchy mounted")
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
	if cgid, _ := cgroupIDOf(fd); cgid == 0 {
		t.Log("the kernel gives no cgroup ID through the pidfd: every call reads /proc")
	} else {
		a.locMu.Lock()
		learnt := a.byCgroup[cgid]
		a.locMu.Unlock()
		if learnt != A.ID {
			t.Fatalf("cgroup %d learnt as %q, want A's ID", cgid, learnt)
		}
	}
	restore()
	t.Cleanup(dockertest.JoinCgroupsOf(t, x.Process.Pid, B.PID))
	sel, err := a.Attest(ctx, int32(x.Process.Pid), fd)
	if got := strs(sel); err != nil || !slices.Contains(got, "docker:label:app:B") || slices.Contains(got, "docker:label:app:A") {
		t.Fatalf("after the move into B's cgroups: %q, %v", got, err)
	}
}

func TestCgroup2Mount(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n", "/sys/fs/cgroup/unified"},
		{"32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n30 1 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", "/sys/fs/cgroup"},
		// A bind of a subtree is not the hierarchy's root.
		{"41 31 0:38 /docker /mnt rw - cgroup2 cgroup2 rw\n", ""},
		{"garbage\n - \n\n", ""},
	} {
		if got := cgroup2Mount([]byte(tc.in)); got != tc.want {
			t.Errorf("cgroup2Mount(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
