package attestors

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/systemd"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/systemd/systemdtest"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// reconnecting drops the attestor's D-Bus connection before every call,
// so that each one dials, authenticates and says Hello to the bus again.
type reconnecting struct{ a *systemd.Attestor }

func (r reconnecting) Attest(ctx context.Context, pid int32, pidfd int) ([]*types.Selector, error) {
	if err := r.a.Close(); err != nil {
		return nil, err
	}
	return r.a.Attest(ctx, pid, pidfd)
}

// systemdLatency is the systemd attestor's share of TestLatency: the main
// process of a unit a real systemd --user started, attested over the
// manager's own bus. It is not needed for the report, which says when it
// did not run.
func systemdLatency(t *testing.T) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := "spirehw-bench-" + hex.EncodeToString(b)
	t.Cleanup(func() {
		if t.Skipped() {
			note("the systemd rows (TestLatency/systemd skipped; its log says why)")
		}
	})
	m := systemdtest.StartUserManager(t, "system.slice/"+name+"-mgr.slice")
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	unit := name + ".service"
	_, pid := m.StartService(t, unit, sleep, "600")
	fd := openPidfd(t, pid)
	kept := systemd.New(systemd.Config{BusAddress: m.Bus})
	t.Cleanup(func() { _ = kept.Close() })
	fresh := systemd.New(systemd.Config{BusAddress: m.Bus})
	t.Cleanup(func() { _ = fresh.Close() })
	want := "systemd:id:" + unit
	measure(t,
		row{"systemd, over a kept D-Bus connection", kept, pid, fd, size(50, 5000), want},
		row{"systemd, a new D-Bus connection every call", reconnecting{fresh}, pid, fd, size(20, 1000), want},
	)
	ran("latency/systemd")
}
