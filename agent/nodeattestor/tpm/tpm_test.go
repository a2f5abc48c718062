package tpm_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"strings"
	"testing"

	agenttpm "github.com/spiffe-hw/spire-hw/agent/nodeattestor/tpm"
	servertpm "github.com/spiffe-hw/spire-hw/server/nodeattestor/tpm"
	"github.com/spiffe-hw/spire-hw/sim/swtpm"
	"github.com/spiffe-hw/spire-hw/tpm"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestAgentAgainstVerifier runs the agent attestor's two steps against the
// server verifier on swtpm, for both EK algorithms, and checks that no
// object stays loaded in the TPM afterwards.
func TestAgentAgainstVerifier(t *testing.T) {
	fleet := swtpm.StartT(t, 1)
	roots, err := tpm.LoadEKRoots(fleet.CABundle)
	if err != nil {
		t.Fatal(err)
	}
	v, err := servertpm.New(servertpm.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), EKRoots: roots})
	if err != nil {
		t.Fatal(err)
	}
	for _, alg := range []string{"rsa", "ecc"} {
		t.Run(alg, func(t *testing.T) {
			a, err := agenttpm.New(agenttpm.PluginData{TPMPath: fleet.TPMs[0].Path, EKAlgorithm: alg})
			if err != nil {
				t.Fatal(err)
			}
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
			req, err := x509.ParseCertificateRequest(csr)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			payload, err := a.AttestationData(ctx, csr)
			if err != nil {
				t.Fatal(err)
			}
			res, err := v.Attest(ctx, payload, req, func(ctx context.Context, c []byte) ([]byte, error) {
				return a.Respond(ctx, c)
			})
			if err != nil {
				t.Fatal(err)
			}
			if !res.CanReattest || len(res.Selectors) < 10 {
				t.Fatalf("result %+v", res)
			}
			tp, err := tpm.Open(fleet.TPMs[0].Path)
			if err != nil {
				t.Fatal(err)
			}
			defer tp.Close()
			if hs, err := tp.Handles(); err != nil || len(hs) != 0 {
				t.Fatalf("handles left loaded: %v %v", hs, err)
			}
		})
	}
}

// TestAgentNeedsCSR: without a usable CSR there is no key to bind, so the
// attestor fails before it opens the TPM (which here does not exist).
func TestAgentNeedsCSR(t *testing.T) {
	a, err := agenttpm.New(agenttpm.PluginData{TPMPath: "unix:///nonexistent"})
	if err != nil {
		t.Fatal(err)
	}
	for name, csr := range map[string][]byte{"none": nil, "empty": {}, "garbage": []byte("not a CSR")} {
		if _, err := a.AttestationData(context.Background(), csr); err == nil || !strings.Contains(err.Error(), "CSR") {
			t.Fatalf("attestation data with %s CSR: err = %v, want a CSR error", name, err)
		}
	}
	if _, err := agenttpm.New(agenttpm.PluginData{EKAlgorithm: "dsa"}); err == nil {
		t.Fatal("accepted ek_algorithm dsa")
	}
}
