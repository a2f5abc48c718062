package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/sim/swtpm"
	"github.com/spiffe-hw/spire-hw/tpm"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// startTPMServer runs a server whose only NodeAttestor is "tpm", trusting
// the EK certificates of the simulator's local CA.
func startTPMServer(t *testing.T, ekCA, extra string) *serverEnv {
	t.Helper()
	return startServerConf(t, serverConfig{extra: extra, nodeAttestor: fmt.Sprintf(`NodeAttestor "tpm" {
        plugin_data {
            ek_ca_path = %q
            pcrs = [0, 1, 2, 3, 4, 5, 6, 7]
        }
    }`, ekCA)})
}

// startTPMAgent runs an agent that attests with the TPM at tpmPath.
func startTPMAgent(t *testing.T, s *serverEnv, tpmPath string) *agentEnv {
	t.Helper()
	a := newAgent(t, s, agentConfig{nodeAttestor: fmt.Sprintf(`NodeAttestor "tpm" {
        plugin_data {
            tpm_path = %q
        }
    }`, tpmPath), workloadAttestor: unixAttestor("")})
	a.start(t, "")
	return a
}

// tpmIdentity opens a simulated TPM the way the agent does and returns the
// hex EK hash that names the agent; with boot, it first plays a measured
// boot so that the PCRs hold real values.
func tpmIdentity(t *testing.T, path string, boot bool) string {
	t.Helper()
	tp, err := tpm.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	if boot {
		if _, err := swtpm.MeasureBoot(tp, swtpm.Boot(true)); err != nil {
			t.Fatal(err)
		}
	}
	ek, err := tp.EK()
	if err != nil {
		t.Fatal(err)
	}
	h, err := tpm.EKHash(ek.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// extendPCR extends pcr of the TPM at path, as a changed boot component
// would, and returns the PCR's new hex value.
func extendPCR(t *testing.T, path string, pcr int, data string) string {
	t.Helper()
	tp, err := tpm.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	d := sha256.Sum256([]byte(data))
	if err := tp.Extend(pcr, d[:]); err != nil {
		t.Fatal(err)
	}
	v, err := tp.ReadPCRs([]int{pcr})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(v[pcr])
}

// listedAgent is an agent as `spire-server agent list -output json` shows it.
type listedAgent struct {
	ID struct {
		Path string `json:"path"`
	} `json:"id"`
	AttestationType string `json:"attestation_type"`
	Serial          string `json:"x509svid_serial_number"`
	CanReattest     bool   `json:"can_reattest"`
	Selectors       []struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	} `json:"selectors"`
}

func (a listedAgent) has(selector string) bool {
	return slices.ContainsFunc(a.Selectors, func(s struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	}) bool {
		return s.Type+":"+s.Value == selector
	})
}

func listAgents(t *testing.T, s *serverEnv) map[string]listedAgent {
	t.Helper()
	var resp struct {
		Agents []listedAgent `json:"agents"`
	}
	out := s.cli(t, "agent", "list", "-output", "json")
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("agent list: %v\n%s", err, out)
	}
	m := map[string]listedAgent{}
	for _, a := range resp.Agents {
		m["spiffe://example.org"+a.ID.Path] = a
	}
	return m
}

// svidIDs lists the SPIFFE IDs the client currently gets, each verified
// against the bundle sent with it.
func svidIDs(t *testing.T, x *workloadapi.X509Context) []string {
	t.Helper()
	var ids []string
	for _, s := range x.SVIDs {
		if _, _, err := x509svid.Verify(s.Certificates, x.Bundles); err != nil {
			t.Fatalf("SVID %s does not verify against the fetched bundle: %v", s.ID, err)
		}
		ids = append(ids, s.ID.String())
	}
	slices.Sort(ids)
	return ids
}

// TestTPMNodeAttestation drives TPM node attestation through the real
// binaries on two swtpm instances: the agent is named by its EK, workloads
// get SVIDs from entries under that ID and under node aliases whose
// selectors name the EK and the quoted PCRs, the agent re-attests at the
// half-life of a 20 s SVID with a fresh quote so that a PCR change moves it
// from one alias to another, and a second TPM yields a second agent ID.
func TestTPMNodeAttestation(t *testing.T) {
	t.Parallel()
	fleet := swtpm.StartT(t, 2)
	path0, path1 := fleet.TPMs[0].Path, fleet.TPMs[1].Path
	ek0 := tpmIdentity(t, path0, true)
	ek1 := tpmIdentity(t, path1, false)
	if ek0 == ek1 {
		t.Fatal("two simulated TPMs share an EK")
	}
	agent0 := "spiffe://example.org/spire/agent/tpm/" + ek0
	agent1 := "spiffe://example.org/spire/agent/tpm/" + ek1
	pcr7 := extendPCR(t, path0, 7, "grub.cfg v1")

	s := startTPMServer(t, fleet.CABundle, `agent_ttl = "20s"`)
	s.createEntry(t, "-parentID", agent0, "-spiffeID", "spiffe://example.org/tpm/direct", "-selector", uidSelector)
	s.createEntry(t, "-node", "-spiffeID", "spiffe://example.org/tpm/ek-node", "-selector", "tpm:ek_hash:"+ek0)
	s.createEntry(t, "-parentID", "spiffe://example.org/tpm/ek-node", "-spiffeID", "spiffe://example.org/tpm/by-ek", "-selector", uidSelector)
	s.createEntry(t, "-node", "-spiffeID", "spiffe://example.org/tpm/boot-v1", "-selector", "tpm:pcr:sha256:7:"+pcr7)
	s.createEntry(t, "-parentID", "spiffe://example.org/tpm/boot-v1", "-spiffeID", "spiffe://example.org/tpm/by-pcr-v1", "-selector", uidSelector)
	s.createEntry(t, "-parentID", agent1, "-spiffeID", "spiffe://example.org/tpm/second", "-selector", uidSelector)

	a0 := startTPMAgent(t, s, path0)
	c0 := newClient(t, a0)
	eventually(t, 20*time.Second, "all three SVIDs of the first TPM", func() error {
		got := svidIDs(t, fetchX509(t, c0, "spiffe://example.org/tpm/by-pcr-v1"))
		want := []string{"spiffe://example.org/tpm/by-ek", "spiffe://example.org/tpm/by-pcr-v1", "spiffe://example.org/tpm/direct"}
		if !slices.Equal(got, want) {
			return fmt.Errorf("SVIDs %v, want %v", got, want)
		}
		return nil
	})

	agents := listAgents(t, s)
	first, ok := agents[agent0]
	if !ok {
		t.Fatalf("agent %s not attested; agents: %v", agent0, agents)
	}
	if first.AttestationType != "tpm" || !first.CanReattest {
		t.Fatalf("agent %s: attestation type %q, can re-attest %v", agent0, first.AttestationType, first.CanReattest)
	}
	for _, want := range []string{"tpm:ek_hash:" + ek0, "tpm:pcr:sha256:7:" + pcr7, "tpm:manufacturer:id:00001014"} {
		if !first.has(want) {
			t.Errorf("agent selectors lack %s: %v", want, first.Selectors)
		}
	}

	// A changed boot component: PCR 7 moves on. Nothing changes until the
	// agent re-attests at half-life (10 s) with a fresh quote; then it
	// leaves the v1 alias for the v2 one.
	pcr7v2 := extendPCR(t, path0, 7, "grub.cfg v2")
	s.createEntry(t, "-node", "-spiffeID", "spiffe://example.org/tpm/boot-v2", "-selector", "tpm:pcr:sha256:7:"+pcr7v2)
	s.createEntry(t, "-parentID", "spiffe://example.org/tpm/boot-v2", "-spiffeID", "spiffe://example.org/tpm/by-pcr-v2", "-selector", uidSelector)
	eventually(t, 45*time.Second, "the SVID of the new boot state after re-attestation", func() error {
		got := svidIDs(t, fetchX509(t, c0, "spiffe://example.org/tpm/direct"))
		want := []string{"spiffe://example.org/tpm/by-ek", "spiffe://example.org/tpm/by-pcr-v2", "spiffe://example.org/tpm/direct"}
		if !slices.Equal(got, want) {
			return fmt.Errorf("SVIDs %v, want %v", got, want)
		}
		return nil
	})
	again := listAgents(t, s)[agent0]
	if again.Serial == first.Serial {
		t.Fatal("the agent SVID serial did not change")
	}
	if !again.has("tpm:pcr:sha256:7:"+pcr7v2) || again.has("tpm:pcr:sha256:7:"+pcr7) {
		t.Fatalf("agent selectors after re-attestation: %v", again.Selectors)
	}
	log := a0.proc.out.String()
	if n := strings.Count(log, "Node attestation succeeded"); n < 2 {
		t.Fatalf("the agent attested %d times, want a re-attestation at half-life", n)
	}
	if strings.Contains(log, "Renewed agent SVID") || strings.Contains(log, "re-attesting") {
		t.Fatal("a re-attestable agent tried to renew its SVID instead of re-attesting")
	}

	// A second machine: another TPM, another agent ID, its own entries
	// only.
	a1 := startTPMAgent(t, s, path1)
	c1 := newClient(t, a1)
	if got := svidIDs(t, fetchX509(t, c1, "spiffe://example.org/tpm/second")); !slices.Equal(got, []string{"spiffe://example.org/tpm/second"}) {
		t.Fatalf("second agent's workload got %v", got)
	}
	agents = listAgents(t, s)
	if _, ok := agents[agent1]; !ok || len(agents) != 2 {
		t.Fatalf("want agents %s and %s, got %v", agent0, agent1, agents)
	}
	for _, a := range []*agentEnv{a0, a1} {
		if done, code := a.proc.exited(); done {
			t.Fatalf("agent exited with %d", code)
		}
	}
}
