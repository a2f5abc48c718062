package tpm_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	kmtpm "github.com/spiffe-hw/spire-hw/agent/keymanager/tpm"
	agenttpm "github.com/spiffe-hw/spire-hw/agent/nodeattestor/tpm"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	servertpm "github.com/spiffe-hw/spire-hw/server/nodeattestor/tpm"
	"github.com/spiffe-hw/spire-hw/sim/swtpm"
	"github.com/spiffe-hw/spire-hw/tpm"
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

// TestResidentAgentKeyCertified: with KeyManager "tpm" on the same TPM, the
// CSR key is one the attestor's shared connection holds, so its response
// carries the AK's certification of that key: a verifier that requires it
// admits the agent with tpm:agent_key:resident, and the AK, EK and key are
// all flushed again (swtpm has three object slots). A CSR key that is not
// resident goes without the proof, which that verifier refuses.
func TestResidentAgentKeyCertified(t *testing.T) {
	fleet := swtpm.StartT(t, 1)
	path := fleet.TPMs[0].Path
	roots, err := tpm.LoadEKRoots(fleet.CABundle)
	if err != nil {
		t.Fatal(err)
	}
	v, err := servertpm.New(servertpm.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), EKRoots: roots, RequireResidentAgentKey: true})
	if err != nil {
		t.Fatal(err)
	}
	km, err := kmtpm.New(path, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer km.Close()
	ctx := context.Background()
	attest := func(t *testing.T, alg string, csr []byte) (*nodeattestor.Result, error) {
		t.Helper()
		a, err := agenttpm.New(agenttpm.PluginData{TPMPath: path, EKAlgorithm: alg})
		if err != nil {
			t.Fatal(err)
		}
		req, err := x509.ParseCertificateRequest(csr)
		if err != nil {
			t.Fatal(err)
		}
		payload, err := a.AttestationData(ctx, csr)
		if err != nil {
			t.Fatal(err)
		}
		return v.Attest(ctx, payload, req, a.Respond)
	}
	// The key manager holds the shared connection, so the check for
	// leftover objects goes through it too.
	noHandles := func(t *testing.T) {
		t.Helper()
		tp, release, err := tpm.Shared(path)
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		if hs, err := tp.Handles(); err != nil || len(hs) != 0 {
			t.Fatalf("handles left loaded: %v %v", hs, err)
		}
	}
	for _, alg := range []string{"rsa", "ecc"} {
		t.Run(alg, func(t *testing.T) {
			key, err := km.GenerateKey(ctx)
			if err != nil {
				t.Fatal(err)
			}
			csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
			if err != nil {
				t.Fatal(err)
			}
			res, err := attest(t, alg, csr)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(res.Selectors, func(s *types.Selector) bool {
				return s.Type == "tpm" && s.Value == servertpm.AgentKeyResident
			}) {
				t.Fatalf("selectors %v lack tpm:%s", res.Selectors, servertpm.AgentKeyResident)
			}
			noHandles(t)
		})
	}
	t.Run("memory_key", func(t *testing.T) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
		if _, err := attest(t, "", csr); err == nil || !strings.Contains(err.Error(), "TPM-resident agent key is required") {
			t.Fatalf("a memory key passed a verifier requiring a resident one: %v", err)
		}
		noHandles(t)
	})
}
