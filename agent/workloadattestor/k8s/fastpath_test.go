package k8s_test

import (
	"slices"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/k8s"
	"github.com/spiffe-hw/spire-hw/sim/simtest"
)

// TestKnownCgroup: once a pod container's cgroup has been seen, a caller in
// it is located from the cgroup ID its pidfd reports, without reading
// /proc; the legacy locator, which has no such index, reads /proc on every
// call.
func TestKnownCgroup(t *testing.T) {
	f := newFixture(t)
	a := newAttestor(t, f.secure())
	if !k8s.FastPath(a) {
		_, err := containerinfo.NewCgroupIndex(true)
		simtest.Skip(t, err.Error())
	}
	if _, err := attest(t, a, f.pidA, f.pidfdA); err != nil {
		t.Fatal(err)
	}
	k8s.SetProcDir(a, t.TempDir())
	got, err := attest(t, a, f.pidA, f.pidfdA)
	if err != nil || !slices.Equal(got, f.wantA(true)) {
		t.Fatalf("known cgroup, /proc out of reach: %q, %v; want %q", got, err, f.wantA(true))
	}

	cfg := f.secure()
	cfg.LegacyContainerLocator = true
	legacy := newAttestor(t, cfg)
	if k8s.FastPath(legacy) {
		t.Fatal("the legacy locator indexes cgroup IDs")
	}
	if _, err := attest(t, legacy, f.pidA, f.pidfdA); err != nil {
		t.Fatal(err)
	}
	k8s.SetProcDir(legacy, t.TempDir())
	if got, err := attest(t, legacy, f.pidA, f.pidfdA); err == nil {
		t.Fatalf("legacy locator answered %q without reading /proc", got)
	}
}
