package tpm_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	servertpm "github.com/spiffe-hw/spire-hw/server/nodeattestor/tpm"
	"github.com/spiffe-hw/spire-hw/tpm"
)

// residentCSR has tp generate a key from tmpl and returns it with a CSR it
// signed and that CSR parsed, as the agent's KeyManager "tpm" does.
func residentCSR(t *testing.T, tp *tpm.TPM, tmpl tpm2.TPMTPublic) (*tpm.ResidentKey, *x509.CertificateRequest) {
	t.Helper()
	k, err := tp.CreateResidentKeyFrom(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
	if err != nil {
		t.Fatal(err)
	}
	return k, parseCSR(t, der)
}

// TestAttestResidentAgentKey: the AK's certification of the CSR key is
// verified after the quote. A genuine one earns tpm:agent_key:resident; a
// present but false one refuses the agent; none refuses it only under
// require_resident_agent_key.
func TestAttestResidentAgentKey(t *testing.T) {
	f := setup(t)
	duplicable := tpm.ResidentKeyTemplate
	duplicable.ObjectAttributes.FixedTPM = false
	duplicable.ObjectAttributes.FixedParent = false

	keyA, reqA := residentCSR(t, f.a.t, tpm.ResidentKeyTemplate)
	keyB, reqB := residentCSR(t, f.b.t, tpm.ResidentKeyTemplate)
	dupKey, dupReq := residentCSR(t, f.a.t, duplicable)

	// withCSR is node a attesting for req: its attestation data names
	// req, and its quote binds req's key.
	withCSR := func(req *x509.CertificateRequest) *node {
		der, err := x509.MarshalPKIXPublicKey(req.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		n := *f.a
		n.csr, n.req, n.csrKeyDER = req.Raw, req, der
		return &n
	}
	// certify has tp's ak certify k for the challenge and n's CSR key.
	certify := func(tp *tpm.TPM, ak *tpm.AK, k *tpm.ResidentKey) func(*testing.T, *node, *tpm.Challenge) *tpm.Certification {
		return func(t *testing.T, n *node, c *tpm.Challenge) *tpm.Certification {
			cert, err := tp.Certify(ak, k, tpm.AgentKeyQualifyingData(c.Nonce, n.csrKeyDER))
			if err != nil {
				t.Fatal(err)
			}
			return cert
		}
	}
	rows := []struct {
		name    string
		n       *node
		require bool
		proof   func(*testing.T, *node, *tpm.Challenge) *tpm.Certification
		// want is the refusal; "" means admitted, with the selector
		// when resident.
		want     string
		resident bool
	}{
		{name: "genuine", n: withCSR(reqA), proof: certify(f.a.t, f.a.ak, keyA), resident: true},
		{name: "genuine_required", n: withCSR(reqA), require: true, proof: certify(f.a.t, f.a.ak, keyA), resident: true},
		// A memory key in the CSR, with the certification of a resident
		// key beside it: the proof is true, but of another key.
		{name: "csr_key_not_the_certified_one", n: f.a, proof: certify(f.a.t, f.a.ak, keyA), want: "certified key is not the CSR's key"},
		// Node a's CSR key lives in TPM b and b's AK certifies it: the
		// AK the server verified is a's.
		{name: "certified_by_another_tpms_ak", n: withCSR(reqB), proof: certify(f.b.t, f.b.ak, keyB), want: "not certified by the attested AK"},
		{name: "duplicable_key", n: withCSR(dupReq), proof: certify(f.a.t, f.a.ak, dupKey), want: "can be duplicated out of the TPM"},
		{name: "no_proof_required", n: f.a, require: true, want: "TPM-resident agent key is required"},
		{name: "no_proof", n: f.a},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			a, err := servertpm.New(servertpm.Config{TrustDomain: td, EKRoots: f.roots, RequireResidentAgentKey: r.require})
			if err != nil {
				t.Fatal(err)
			}
			res, err := a.Attest(context.Background(), mustJSON(t, r.n.data()), r.n.req, func(_ context.Context, c []byte) ([]byte, error) {
				ch, err := tpm.ParseChallenge(c)
				if err != nil {
					return nil, err
				}
				resp := r.n.answer(t, ch)
				if r.proof != nil {
					resp.AgentKey = r.proof(t, r.n, ch)
				}
				return mustJSON(t, resp), nil
			})
			if r.want != "" {
				if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), r.want) {
					t.Fatalf("err = %v, want PermissionDenied containing %q (result %v)", err, r.want, res)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			sels := selectorSet(res.Selectors)
			if got := sels["tpm:agent_key:resident"]; got != r.resident {
				t.Fatalf("tpm:agent_key:resident = %v, want %v: %v", got, r.resident, sels)
			}
		})
	}
}
