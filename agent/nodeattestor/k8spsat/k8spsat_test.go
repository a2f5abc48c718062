package k8spsat_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	agentpsat "github.com/spiffe-hw/spire-hw/agent/nodeattestor/k8spsat"
	serverpsat "github.com/spiffe-hw/spire-hw/server/nodeattestor/k8spsat"
	"github.com/spiffe-hw/spire-hw/sim/k8s"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestAgentAgainstVerifier: the token the kubelet would mount goes from
// the agent's collector to the server verifier and a simulated API server
// that really checks it; a rotated token file is picked up.
func TestAgentAgainstVerifier(t *testing.T) {
	c, err := k8s.Start(k8s.Options{Algorithm: "ES256"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	node := k8s.Node{Name: "n1", UID: k8s.NewUID()}
	pod := k8s.Pod{Namespace: "spire", Name: "agent-1", UID: k8s.NewUID(), ServiceAccount: "spire-agent", NodeName: "n1", HostIP: "10.0.0.9"}
	c.PutNode(node)
	c.PutPod(pod)
	tokPath := filepath.Join(t.TempDir(), "spire-agent")
	writeToken := func() {
		tok, err := c.MintToken("spire", "agent-1", []string{"spire-server"}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(tokPath, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeToken()

	client, err := serverpsat.NewAPIClient(serverpsat.ClientConfig{URL: c.URL(), CAPEM: c.CAPEM(), Token: c.BearerToken()})
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	v, err := serverpsat.New(serverpsat.Config{TrustDomain: td, Clusters: map[string]*serverpsat.Cluster{
		"demo": {Client: client, Audience: []string{"spire-server"}, ServiceAccounts: []string{"spire:spire-agent"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	a, err := agentpsat.New(agentpsat.PluginData{Cluster: "demo", TokenPath: tokPath})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		p, err := a.AttestationData(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := v.Attest(context.Background(), p, nil, a.Respond)
		if err != nil {
			t.Fatalf("attestation %d: %v", i, err)
		}
		if want := "spiffe://example.org/spire/agent/k8s_psat/demo/" + node.UID; res.AgentID.String() != want {
			t.Fatalf("agent ID %s, want %s", res.AgentID, want)
		}
		writeToken()
	}
	if _, err := a.Respond(context.Background(), []byte("x")); err == nil {
		t.Error("answered a challenge")
	}
	if _, err := agentpsat.New(agentpsat.PluginData{}); err == nil {
		t.Error("accepted a config without cluster")
	}
	empty, _ := agentpsat.New(agentpsat.PluginData{Cluster: "demo", TokenPath: filepath.Join(t.TempDir(), "missing")})
	if _, err := empty.AttestationData(context.Background(), nil); err == nil {
		t.Error("attestation data without a token file")
	}
}
