package k8s_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo/cgrouptest"
)

// TestDelegatedForgery: an unprivileged user's delegated cgroup subtree
// (as systemd gives user@<uid>.service) holds a cgroup the user made and
// named after pod A's container, and a process of theirs in it. Its paths
// name pod A and its container, which the kubelet lists; it must be
// refused, by both locators, never given pod A's selectors.
func TestDelegatedForgery(t *testing.T) {
	f := newFixture(t)
	top := fmt.Sprintf("spirehw-deleg-%d", os.Getpid())
	g := cgrouptest.New(t, top+"/user@1000.service/kubepods/besteffort/pod"+f.podA.UID+"/"+f.contA)
	for _, d := range g.Dirs {
		// The subtree from user@1000.service down is the user's, as systemd
		// chowns it.
		base := strings.TrimSuffix(d, g.Rel)
		for dir := d; dir != filepath.Join(base, top); dir = filepath.Dir(dir) {
			if err := os.Lchown(dir, 1000, 1000); err != nil {
				t.Fatal(err)
			}
		}
	}
	x := exec.Command("/bin/sleep", "60")
	g.Start(t, x)
	for _, legacy := range []bool{false, true} {
		cfg := f.secure()
		cfg.LegacyContainerLocator = legacy
		got, err := attest(t, newAttestor(t, cfg), x.Process.Pid, pidfd(t, x.Process.Pid))
		if !errors.Is(err, containerinfo.ErrDelegated) {
			t.Fatalf("legacy locator %v: a user's cgroup named after pod A's container: %q, %v; want ErrDelegated", legacy, got, err)
		}
		t.Logf("refused: %v", err)
	}
	// Pod A's own process is still attested.
	if _, err := attest(t, newAttestor(t, f.secure()), f.pidA, f.pidfdA); err != nil {
		t.Fatal(err)
	}
}
