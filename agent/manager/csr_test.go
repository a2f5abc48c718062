package manager

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// checkWorkloadCSR fails unless workloadCSR's request for id has the
// CertificationRequestInfo newCSR (x509) writes for the same key and id,
// and parses and verifies as a CSR for that key and id.
func checkWorkloadCSR(t *testing.T, key *ecdsa.PrivateKey, id spiffeid.ID) {
	t.Helper()
	ours, err := workloadCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := newCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	if o, x := rawTBS(t, ours), rawTBS(t, theirs); !bytes.Equal(o, x) {
		t.Fatalf("%s: request info differs from x509's:\n%x\n%x", id, o, x)
	}
	want, err := x509.ParseCertificateRequest(theirs)
	if err != nil {
		// x509 refuses to read back what it wrote for this ID (a trust
		// domain of "."); so does the server, for ours as for x509's.
		if _, oerr := x509.ParseCertificateRequest(ours); oerr == nil {
			t.Fatalf("%s: x509 refuses its own CSR (%v) but reads ours", id, err)
		}
		return
	}
	got, err := x509.ParseCertificateRequest(ours)
	if err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	if got.SignatureAlgorithm != want.SignatureAlgorithm {
		t.Fatalf("%s: signature algorithm %v, x509's %v", id, got.SignatureAlgorithm, want.SignatureAlgorithm)
	}
	if err := got.CheckSignature(); err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	if len(got.URIs) != 1 || got.URIs[0].String() != id.String() || !key.PublicKey.Equal(got.PublicKey) {
		t.Fatalf("%s: CSR names %v for another key or ID", id, got.URIs)
	}
}

// rawTBS returns the CertificationRequestInfo of a DER CSR, with its tag
// and length.
func rawTBS(t *testing.T, der []byte) []byte {
	t.Helper()
	in := cryptobyte.String(der)
	var body cryptobyte.String
	var tbs cryptobyte.String
	if !in.ReadASN1(&body, cbasn1.SEQUENCE) || !body.ReadASN1Element(&tbs, cbasn1.SEQUENCE) {
		t.Fatal("malformed CSR")
	}
	return tbs
}

// TestWorkloadCSRAsX509 covers the lengths at which DER changes how it
// writes a length (under 128, under 256, more) and the longest ID.
func TestWorkloadCSRAsX509(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	for _, path := range []string{"/w", "/ns/default/sa/web", "/" + strings.Repeat("a", 100), "/" + strings.Repeat("b", 200), "/" + strings.Repeat("c", 2000)} {
		id, err := spiffeid.FromPath(td, path)
		if err != nil {
			t.Fatal(err)
		}
		checkWorkloadCSR(t, key, id)
	}
	// The agent's own request (no ID) and other curves go through x509.
	if der, err := workloadCSR(key, spiffeid.ID{}); err != nil {
		t.Fatal(err)
	} else if csr, err := x509.ParseCertificateRequest(der); err != nil || len(csr.URIs) != 0 {
		t.Fatalf("CSR without an ID: %v, URIs %v", err, csr.URIs)
	}
}

// FuzzWorkloadCSR: the SPIFFE ID comes from an entry the server sent;
// whatever ID it is, the hand-encoded request is x509's.
func FuzzWorkloadCSR(f *testing.F) {
	for _, s := range []string{"spiffe://example.org/w", "spiffe://a.b-c_d/x/y.z", "spiffe://" + strings.Repeat("d", 250) + "/" + strings.Repeat("e", 300)} {
		f.Add(s)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := spiffeid.FromString(s)
		if err != nil {
			return
		}
		checkWorkloadCSR(t, key, id)
	})
}
