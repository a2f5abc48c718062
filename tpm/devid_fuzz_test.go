package tpm_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/tpm"
)

// The tpm_devid parsers take agent (and, on the agent, server) input: they
// must refuse garbage without panicking, and the residency check must
// never accept what they let through without a real TPM behind it.

func FuzzParseDevIDAttestation(f *testing.F) {
	f.Add([]byte(`{"DevIDCert":["AAEC"],"DevIDPub":"AAEC","EKCert":"AAEC","EKPub":"AAEC","AKPub":"AAEC","CertifiedDevID":"/1RDR4AX","CertificationSignature":"ABQACw=="}`))
	f.Add([]byte(`{"DevIDCert":[],"DevIDPub":null}`))
	f.Add([]byte(`{"devidcert":["AA=="],"AKPub":"AAEACwAFAHIAAAAQABQACwgAAAAAAAA="}`))
	f.Add([]byte(`[]`))
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	roots := &tpm.EKRoots{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool()}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := tpm.ParseDevIDAttestation(b)
		if err != nil {
			return
		}
		if _, err := tpm.VerifyDevIDResidency(d, &k.PublicKey, roots, time.Now()); err == nil {
			t.Fatal("residency verified with no trusted EK root")
		}
	})
}

func FuzzParseDevIDChallenge(f *testing.F) {
	f.Add([]byte(`{"DevID":"AQID","CredActivation":{"Credential":"AQ==","Secret":"AQ=="}}`))
	f.Add([]byte(`{"DevID":"AQID","CredActivation":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := tpm.ParseDevIDChallenge(b)
		if err != nil {
			return
		}
		if len(c.DevID) == 0 || c.CredActivation == nil {
			t.Fatal("incomplete challenge accepted")
		}
	})
}

func FuzzParseDevIDChallengeResponse(f *testing.F) {
	f.Add([]byte(`{"DevID":"AQID","CredActivation":"AQID"}`))
	f.Add([]byte(`{"DevID":"","CredActivation":"AQID"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := tpm.ParseDevIDChallengeResponse(b)
		if err != nil {
			return
		}
		if len(r.DevID) == 0 || len(r.CredActivation) == 0 {
			t.Fatal("incomplete response accepted")
		}
	})
}
