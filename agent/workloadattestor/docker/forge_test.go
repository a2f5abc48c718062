package docker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo/cgrouptest"
	"github.com/spiffe-hw/spire-hw/sim/dockerd"
)

// TestForgedCgroupName: a process outside every container moves into a
// cgroup it made and named after container B, as a workload with a
// delegated cgroup subtree (a user's systemd manager, a Delegate=yes unit)
// can. Its cgroup paths name B, so the locator finds B; the check against
// B's init must refuse it, never hand it B's selectors. B's own process is
// still attested as B afterwards.
func TestForgedCgroupName(t *testing.T) {
	d := dockerd.Start(t)
	B, _ := sleeper(t, d, map[string]string{"app": "B"})
	a := newAttestor(t, Config{SocketPath: d.Host})
	waitLive(t, a)
	ctx := context.Background()

	for _, layout := range []string{"docker/" + B.ID, "docker-" + B.ID + ".scope"} {
		t.Run(strings.SplitN(layout, B.ID, 2)[0], func(t *testing.T) {
			g := cgrouptest.New(t, fmt.Sprintf("spirehw-forge-%d/user@1000.service/%s", os.Getpid(), layout))
			x := exec.Command("/bin/sleep", "60")
			g.Start(t, x)
			sel, err := a.Attest(ctx, int32(x.Process.Pid), pidfd(t, x.Process.Pid))
			if !errors.Is(err, containerinfo.ErrNotWithin) {
				t.Fatalf("a process in a cgroup only named after B: %q, %v; want ErrNotWithin", strs(sel), err)
			}
			t.Logf("refused: %v", err)
		})
	}
	sel, err := a.Attest(ctx, int32(B.PID), pidfd(t, B.PID))
	if err != nil || len(sel) == 0 || !containsStr(strs(sel), "docker:label:app:B") {
		t.Fatalf("B's init: %q, %v", strs(sel), err)
	}
}

func containsStr(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
