package tpmdevid_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"testing"

	"github.com/spiffe-hw/spire-hw/server/nodeattestor/tpmdevid"
	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
	"github.com/spiffe-hw/spire-hw/tpm"
)

// FuzzAttest feeds the verifier payloads and answers: whatever they hold,
// without a TPM behind them it must refuse, and never panic. The seeds
// carry a DevID chain that verifies, so the fuzzer reaches the residency
// checks past the certificate parser.
func FuzzAttest(f *testing.F) {
	root, err := testpki.NewRoot("fuzz root")
	if err != nil {
		f.Fatal(err)
	}
	leaf, _, err := root.Issue(testpki.Leaf{CommonName: "node"})
	if err != nil {
		f.Fatal(err)
	}
	seed, _ := json.Marshal(tpm.DevIDAttestation{
		DevIDCert: [][]byte{leaf.Raw}, DevIDPub: []byte{0, 0x23, 0, 0x0b}, EKCert: root.Cert.Raw, EKPub: []byte{0, 1},
		AKPub: []byte{0, 1, 0, 0x0b}, CertifiedDevID: []byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x17}, CertificationSignature: []byte{0, 0x14, 0, 0x0b},
	})
	f.Add(seed, []byte(`{"DevID":"AQID","CredActivation":"AQID"}`))
	f.Add([]byte(`{"DevIDCert":["AAEC"]}`), []byte(`{}`))
	f.Add([]byte(`{`), []byte(`null`))
	roots := x509.NewCertPool()
	roots.AddCert(root.Cert)
	ekRoots := &tpm.EKRoots{Roots: roots, Intermediates: x509.NewCertPool()}
	a, err := tpmdevid.New(tpmdevid.Config{TrustDomain: td, DevIDRoots: roots, EKRoots: ekRoots})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, payload, answer []byte) {
		res, err := a.Attest(context.Background(), payload, nil, func(context.Context, []byte) ([]byte, error) { return answer, nil })
		if err == nil {
			t.Fatalf("accepted without a TPM: %v", res.AgentID)
		}
	})
}
