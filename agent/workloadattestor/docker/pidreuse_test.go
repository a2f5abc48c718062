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

// TestPIDReuse: container A's process is attested (and its answer cached),
// A stops, and a new process takes A's PID and joins container B's
// cgroups. A's pidfd must then be refused, never attested as A (from the
// cache) nor as B; the new process's own pidfd is attested as B.
//
// This runs in the host's PID namespace, where container processes live,
// so other processes on the host may take the PID first; that try is then
// started again with a new A.
func TestPIDReuse(t *testing.T) {
	simtest.RequireRoot(t)
	d := dockerd.Start(t)
	b, _ := sleeper(t, d, map[string]string{"app": "B"})
	a := newAttestor(t, Config{SocketPath: d.Host})
	waitLive(t, a)
	ctx := context.Background()

	for try := 1; ; try++ {
		A, _ := sleeper(t, d, map[string]string{"app": "A"})
		fdA := pidfd(t, A.PID)
		sel, err := a.Attest(ctx, int32(A.PID), fdA)
		if err != nil || !slices.Contains(strs(sel), "docker:label:app:A") {
			t.Fatalf("attest live A: %q, %v", strs(sel), err)
		}
		A.Stop(t)

		y, err := simtest.StartWithPID(A.PID, func() *exec.Cmd { return exec.Command("/bin/sleep", "60") })
		if err != nil {
			if try < 5 {
				t.Logf("try %d: %v; again with a new container", try, err)
				continue
			}
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = y.Process.Kill(); _ = y.Wait() })
		restore := dockertest.JoinCgroupsOf(t, y.Process.Pid, b.PID)
		t.Cleanup(restore)

		sel, err = a.Attest(ctx, int32(A.PID), fdA)
		if err == nil {
			t.Fatalf("A's pidfd attested after A exited and pid %d went to a process of B: %q", A.PID, strs(sel))
		}
		t.Logf("A's pidfd refused: %v", err)
		fdY := pidfd(t, y.Process.Pid)
		sel, err = a.Attest(ctx, int32(A.PID), fdY)
		if err != nil {
			t.Fatalf("attest the new holder of pid %d: %v", A.PID, err)
		}
		if got := strs(sel); !slices.Contains(got, "docker:label:app:B") || slices.Contains(got, "docker:label:app:A") {
			t.Fatalf("the process of B with A's old pid %d attested as %q", A.PID, got)
		}
		return
	}
}
