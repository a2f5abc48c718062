package e2e

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/sim/swtpm"
)

// tpmKeyManager is KeyManager "tpm" on the TPM at path.
func tpmKeyManager(path string) string {
	return fmt.Sprintf(`KeyManager "tpm" {
        plugin_data {
            tpm_path = %q
        }
    }`, path)
}

// TestTPMResidentAgentKey runs the real binaries with the agent's key in
// its TPM and a server that admits only agents proving it: a workload gets
// its SVID, also through an entry that requires tpm:agent_key:resident; the
// agent restarts on its stored SVID with the key loaded from the TPM blob;
// its data directory holds no private key in the clear; and a copy of that
// directory on another machine (another TPM) cannot act as the agent: the
// blob does not load there, so the copy attests as its own node or not at
// all.
func TestTPMResidentAgentKey(t *testing.T) {
	t.Parallel()
	fleet := swtpm.StartT(t, 2)
	path0, path1 := fleet.TPMs[0].Path, fleet.TPMs[1].Path
	agent0 := "spiffe://example.org/spire/agent/tpm/" + tpmIdentity(t, path0, false)
	agent1 := "spiffe://example.org/spire/agent/tpm/" + tpmIdentity(t, path1, false)

	s := startServerConf(t, serverConfig{nodeAttestor: fmt.Sprintf(`NodeAttestor "tpm" {
        plugin_data {
            ek_ca_path = %q
            pcrs = [0, 7]
            require_resident_agent_key = true
        }
    }`, fleet.CABundle)})
	s.createEntry(t, "-parentID", agent0, "-spiffeID", "spiffe://example.org/resident/direct", "-selector", uidSelector)
	s.createEntry(t, "-node", "-spiffeID", "spiffe://example.org/resident/nodes", "-selector", "tpm:agent_key:resident")
	s.createEntry(t, "-parentID", "spiffe://example.org/resident/nodes", "-spiffeID", "spiffe://example.org/resident/required", "-selector", uidSelector)
	s.createEntry(t, "-parentID", agent1, "-spiffeID", "spiffe://example.org/resident/second", "-selector", uidSelector)

	tpmAttestor := func(path string) string {
		return fmt.Sprintf(`NodeAttestor "tpm" {
        plugin_data {
            tpm_path = %q
        }
    }`, path)
	}
	a0 := newAgent(t, s, agentConfig{nodeAttestor: tpmAttestor(path0), keyManager: tpmKeyManager(path0), workloadAttestor: unixAttestor("")})
	a0.start(t, "")
	want := []string{"spiffe://example.org/resident/direct", "spiffe://example.org/resident/required"}
	c0 := newClient(t, a0)
	eventually(t, 20*time.Second, "the workload's SVIDs through the resident-key agent", func() error {
		if got := svidIDs(t, fetchX509(t, c0, "spiffe://example.org/resident/required")); !slices.Equal(got, want) {
			return fmt.Errorf("SVIDs %v, want %v", got, want)
		}
		return nil
	})
	first, ok := listAgents(t, s)[agent0]
	if !ok || !first.has("tpm:agent_key:resident") {
		t.Fatalf("agent %s: listed %v, selectors %v; want tpm:agent_key:resident", agent0, ok, first.Selectors)
	}

	// Restart: the stored SVID is used with the key loaded from the blob,
	// without attesting again.
	a0.proc.Stop()
	data := filepath.Join(a0.dir, "data")
	checkNoClearAgentKey(t, data)
	copyDir := t.TempDir()
	if err := os.CopyFS(copyDir, os.DirFS(data)); err != nil {
		t.Fatal(err)
	}
	a0.start(t, "")
	c0 = newClient(t, a0)
	if got := svidIDs(t, fetchX509(t, c0, "spiffe://example.org/resident/required")); !slices.Equal(got, want) {
		t.Fatalf("after restart: SVIDs %v, want %v", got, want)
	}
	if strings.Contains(a0.proc.out.String(), "Node attestation succeeded") {
		t.Error("the restarted agent attested again instead of using its stored SVID and TPM key")
	}
	if again := listAgents(t, s)[agent0]; again.Serial != first.Serial {
		t.Errorf("agent SVID serial changed across the restart: %s -> %s", first.Serial, again.Serial)
	}

	// The copied data directory on another TPM: the blob does not load, so
	// the stored SVID of agent0 is useless there; the copy attests as the
	// node it is (agent1), never as agent0.
	a1 := newAgent(t, s, agentConfig{nodeAttestor: tpmAttestor(path1), keyManager: tpmKeyManager(path1), workloadAttestor: unixAttestor("")})
	if err := os.CopyFS(filepath.Join(a1.dir, "data"), os.DirFS(copyDir)); err != nil {
		t.Fatal(err)
	}
	a1.start(t, "")
	c1 := newClient(t, a1)
	if got := svidIDs(t, fetchX509(t, c1, "spiffe://example.org/resident/second")); !slices.Contains(got, "spiffe://example.org/resident/second") || slices.Contains(got, "spiffe://example.org/resident/direct") {
		t.Fatalf("the copy's workload got %v: want the second node's entries, none of agent0's", got)
	}
	log := a1.proc.out.String()
	if !strings.Contains(log, "not made by this TPM") {
		t.Errorf("the copy did not report that the stored key is not its TPM's:\n%s", log)
	}
	if !strings.Contains(log, agent1) || strings.Contains(log, `"spiffe_id":"`+agent0) || strings.Contains(log, "spiffe_id="+agent0) {
		t.Errorf("the copy did not attest as %s alone", agent1)
	}
	agents := listAgents(t, s)
	if agents[agent0].Serial != first.Serial {
		t.Error("the copy changed agent0's SVID")
	}
	if !agents[agent1].has("tpm:agent_key:resident") {
		t.Errorf("the second agent's selectors %v lack tpm:agent_key:resident", agents[agent1].Selectors)
	}
}

// checkNoClearAgentKey fails if the agent's data directory holds a clear
// private key file of the agent: a disk key manager's file or PEM keys.
func checkNoClearAgentKey(t *testing.T, dir string) {
	t.Helper()
	found := false
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if d.Name() == "agent_svid.key" {
			t.Errorf("clear agent key file %s", p)
		}
		if d.Name() == "agent_svid.tpmkey" {
			found = true
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte("PRIVATE KEY-----")) {
			t.Errorf("%s holds a PEM private key", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Error("no TPM key blob in the data directory")
	}
}
