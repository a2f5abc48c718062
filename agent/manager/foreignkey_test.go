package manager

import (
	"os"
	"testing"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	kmtpm "github.com/spiffe-hw/spire-hw/agent/keymanager/tpm"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor/jointoken"
	"github.com/spiffe-hw/spire-hw/sim/swtpm"
)

// TestAgentKeyFromAnotherTPM: an agent with KeyManager "tpm" caches a
// workload SVID and stops. Its data directory, copied to a node with
// another TPM (a cloned image), gives that node neither the agent SVID nor
// the cached workload SVIDs, even with the server down: they belong to an
// agent it cannot prove to be. The same copy on the first TPM serves them
// at once, so it is the foreign key that drops them.
func TestAgentKeyFromAnotherTPM(t *testing.T) {
	fleet := swtpm.StartT(t, 2)
	ca := newTestCA(t)
	srv := &fakeServer{ca: ca, agentTTL: time.Hour, svidTTL: time.Hour, token: "tok-1",
		entries: []*types.Entry{workloadEntry("web", 1, "uid:1000")}}
	addr, stopSrv := srv.serve(t, "127.0.0.1:0")
	dir := t.TempDir()
	newTPMManager := func(t *testing.T, tpmPath, dir string) *Manager {
		t.Helper()
		km, err := kmtpm.New(tpmPath, dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { km.Close() })
		m, err := New(Config{
			TrustDomain: testTD, ServerAddress: addr, DataDir: dir,
			NodeAttestor: jointoken.New("tok-1"), KeyManager: km, SyncInterval: 100 * time.Millisecond,
			InsecureBootstrap: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	m := newTPMManager(t, fleet.TPMs[0].Path, dir)
	stop := run(t, m)
	waitFor(t, "web SVID", func() bool { return len(m.FetchWorkloadUpdate(selectors("uid:1000")).Identities) == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	stopSrv()
	copyDir := func() string {
		d := t.TempDir()
		if err := os.CopyFS(d, os.DirFS(dir)); err != nil {
			t.Fatal(err)
		}
		return d
	}

	other := newTPMManager(t, fleet.TPMs[1].Path, copyDir())
	if u := other.FetchWorkloadUpdate(selectors("uid:1000")); len(u.Identities) != 0 {
		t.Fatalf("the copy on another TPM serves %v", identityIDs(u))
	}
	if other.AgentSVID() != nil {
		t.Fatal("the copy on another TPM took the stored agent SVID")
	}

	same := newTPMManager(t, fleet.TPMs[0].Path, copyDir())
	if u := same.FetchWorkloadUpdate(selectors("uid:1000")); len(u.Identities) != 1 {
		t.Fatalf("the copy on the first TPM serves %v, want the cached web SVID", identityIDs(u))
	}
	if same.AgentSVID() == nil {
		t.Fatal("the copy on the first TPM did not take the stored agent SVID")
	}
}
