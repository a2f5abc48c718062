package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/nodeattestor/x509pop"
	"github.com/spiffe-hw/spire-hw/server/servertest"
	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
)

// TestReattestableAgentCannotRenew: a node that attested with evidence it
// can present again (here x509pop) must re-attest to get a new SVID. If
// RenewAgent worked for it, whoever stole only the agent SVID key could keep
// the node's identity forever without the node's own key.
func TestReattestableAgentCannotRenew(t *testing.T) {
	root, err := testpki.NewRoot("node CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, nodeKey, err := root.Issue(testpki.Leaf{CommonName: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caPath := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caPath, testpki.CertsPEM(root.Cert), 0o644); err != nil {
		t.Fatal(err)
	}
	s := servertest.Start(t, servertest.Options{Plugins: `NodeAttestor "x509pop" {
		plugin_data { ca_bundle_path = "` + caPath + `" }
	}`})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	payload, err := json.Marshal(x509pop.AttestationData{Certificates: [][]byte{leaf.Raw}})
	if err != nil {
		t.Fatal(err)
	}
	respond := func(raw []byte) ([]byte, error) {
		var c x509pop.Challenge
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		agentNonce := make([]byte, x509pop.NonceSize)
		rand.Read(agentNonce)
		digest, err := x509pop.CombineNonces(c.ECDSASignature.Nonce, agentNonce)
		if err != nil {
			return nil, err
		}
		r, sig, err := ecdsa.Sign(rand.Reader, nodeKey.(*ecdsa.PrivateKey), digest)
		if err != nil {
			return nil, err
		}
		return json.Marshal(x509pop.Response{ECDSASignature: &x509pop.ECDSAResponse{Nonce: agentNonce, R: r.Bytes(), S: sig.Bytes()}})
	}
	key, csr := servertest.NewCSR(t)
	svid, err := s.Attest(ctx, s.Dial(t, nil), "x509pop", payload, respond, key, csr)
	if err != nil {
		t.Fatalf("x509pop attestation: %v", err)
	}
	conn := s.Dial(t, svid)
	if _, err := entryv1.NewEntryClient(conn).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{}); err != nil {
		t.Fatalf("attested agent cannot sync: %v", err)
	}
	_, csr2 := servertest.NewCSR(t)
	_, err = agentv1.NewAgentClient(conn).RenewAgent(ctx, &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: csr2}})
	wantCode(t, err, codes.PermissionDenied)
	// Upstream agents re-attest on this reason, not on the message.
	if r := deniedReason(err); r != types.PermissionDeniedDetails_AGENT_MUST_REATTEST {
		t.Fatalf("RenewAgent refusal carries reason %v, want AGENT_MUST_REATTEST", r)
	}

	// Re-attesting with the node's key works and replaces the SVID.
	key3, csr3 := servertest.NewCSR(t)
	again, err := s.Attest(ctx, s.Dial(t, nil), "x509pop", payload, respond, key3, csr3)
	if err != nil {
		t.Fatalf("re-attestation: %v", err)
	}
	if again.ID != svid.ID {
		t.Fatalf("re-attested as %s, first as %s", again.ID, svid.ID)
	}
}
