package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/sim/attestsim"
)

// startServerWith runs a server whose only NodeAttestor is the given block.
func startServerWith(t *testing.T, nodeAttestor string) *serverEnv {
	t.Helper()
	return startServerConf(t, serverConfig{nodeAttestor: nodeAttestor})
}

// newAgentWith writes an agent.conf pointing at s whose NodeAttestor is
// the given block, without starting the agent.
func newAgentWith(t *testing.T, s *serverEnv, nodeAttestor string) *agentEnv {
	t.Helper()
	return newAgent(t, s, agentConfig{nodeAttestor: nodeAttestor, workloadAttestor: unixAttestor("")})
}

// TestNodeAttestors drives each simulated node attestor through the real
// binaries: the server verifies what the agent collects from the
// simulator, names the agent as SPIRE would, and a workload under that
// agent gets a verified SVID. A second agent presenting the same identity
// document is refused by the first-use attestors until the agent is
// evicted; the others are listed as able to re-attest and do.
func TestNodeAttestors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, provider string }{
		{"aws_iid", "aws"},
		{"azure_msi", "azure"},
		{"gcp_iit", "gcp"},
		{"k8s_psat", "k8s"},
		{"x509pop", "x509pop"},
		{"sshpop", "sshpop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			node, err := attestsim.Start(tc.provider, shortTempDir(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { node.Close() })
			if node.Plugin != tc.name {
				t.Fatalf("provider %s serves %s, want %s", tc.provider, node.Plugin, tc.name)
			}
			agentID := node.AgentID("example.org")
			if !strings.HasPrefix(agentID, "spiffe://example.org/spire/agent/"+tc.name+"/") {
				t.Fatalf("expected agent ID %s is not under the plugin's path", agentID)
			}
			workload := "spiffe://example.org/attested/" + tc.name

			s := startServerWith(t, node.ServerBlock)
			s.createEntry(t, "-parentID", agentID, "-spiffeID", workload, "-selector", uidSelector)
			a := newAgentWith(t, s, node.AgentBlock)
			a.start(t, "")
			got := svidIDs(t, fetchX509(t, newClient(t, a), workload))
			if !slices.Equal(got, []string{workload}) {
				t.Fatalf("workload got SVIDs %v, want [%s]", got, workload)
			}

			agents := listAgents(t, s)
			listed, ok := agents[agentID]
			if !ok || len(agents) != 1 {
				t.Fatalf("want exactly agent %s, got %v", agentID, agents)
			}
			if listed.AttestationType != tc.name {
				t.Fatalf("attestation type %q, want %q", listed.AttestationType, tc.name)
			}
			if listed.CanReattest == node.FirstUse {
				t.Fatalf("agent list: can re-attest %v for a first-use=%v attestor", listed.CanReattest, node.FirstUse)
			}
			for _, sel := range node.Selectors {
				if !listed.has(sel) {
					t.Errorf("agent selectors lack %s: %v", sel, listed.Selectors)
				}
			}
			if !node.FirstUse {
				// The same credentials again, from another agent process
				// (the node reinstalled): re-attestation under the same
				// agent ID, with a new SVID.
				second := newAgentWith(t, s, node.AgentBlock)
				second.start(t, "")
				got := svidIDs(t, fetchX509(t, newClient(t, second), workload))
				if !slices.Equal(got, []string{workload}) {
					t.Fatalf("re-attested agent's workload got SVIDs %v", got)
				}
				again := listAgents(t, s)
				if len(again) != 1 || again[agentID].Serial == listed.Serial || !again[agentID].CanReattest {
					t.Fatalf("after re-attestation: agents %v, first serial %s", again, listed.Serial)
				}
				return
			}

			// The same identity document again, from another agent: the
			// server must refuse it while the first agent is attested.
			second := newAgentWith(t, s, node.AgentBlock)
			p := start(t, second.dir, "spire-agent", "run", "-config", second.conf)
			select {
			case <-p.Done():
			case <-time.After(30 * time.Second):
				t.Fatalf("the second agent with a reused identity document is still running:\n%s", p.out.String())
			}
			if code := p.State().ExitCode(); code == 0 {
				t.Fatalf("the second agent exited 0:\n%s", p.out.String())
			}
			if out := p.out.String(); !strings.Contains(out, "already used to attest an agent") {
				t.Fatalf("the second agent's output does not show the first-use refusal:\n%s", out)
			}
			if agents := listAgents(t, s); len(agents) != 1 {
				t.Fatalf("after the refused attestation, agents %v", agents)
			}
			if done, code := a.proc.exited(); done {
				t.Fatalf("first agent exited with %d", code)
			}

			// Once the operator evicts the agent, the document attests again.
			s.cli(t, "agent", "evict", "-spiffeID", agentID)
			third := newAgentWith(t, s, node.AgentBlock)
			third.start(t, "")
			if got := svidIDs(t, fetchX509(t, newClient(t, third), workload)); !slices.Equal(got, []string{workload}) {
				t.Fatalf("after eviction, the workload got SVIDs %v", got)
			}
		})
	}
}
