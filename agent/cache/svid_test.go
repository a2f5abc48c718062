package cache

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
)

// An SVID held as DER gives back the chain, each certificate, the key and
// the leaf's facts exactly as the parsed chain and key had them, and one
// read back from its DER is the same.
func TestX509SVIDHoldsChainAndKey(t *testing.T) {
	root, err := testpki.NewRoot("root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.Intermediate("intermediate")
	if err != nil {
		t.Fatal(err)
	}
	notBefore := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	notAfter := notBefore.Add(90 * time.Minute)
	leaf, key, err := inter.Issue(testpki.Leaf{CommonName: "w", URIs: []*url.URL{{Scheme: "spiffe", Host: "example.org", Path: "/w"}}, NotBefore: notBefore, NotAfter: notAfter})
	if err != nil {
		t.Fatal(err)
	}
	chain := []*x509.Certificate{leaf, inter.Cert}
	held, err := NewX509SVID(chain, key)
	if err != nil {
		t.Fatal(err)
	}
	wantKey, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseX509SVID([][]byte{leaf.Raw, inter.Cert.Raw}, wantKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*X509SVID{"new": held, "parsed": again} {
		if got := s.Chain(); !bytes.Equal(got, append(append([]byte(nil), leaf.Raw...), inter.Cert.Raw...)) {
			t.Errorf("%s: chain is not the concatenated DER", name)
		}
		if certs := s.Certificates(); len(certs) != 2 || !bytes.Equal(certs[0], leaf.Raw) || !bytes.Equal(certs[1], inter.Cert.Raw) {
			t.Errorf("%s: %d certificates, want the leaf and the intermediate", name, len(certs))
		}
		if !bytes.Equal(s.Leaf(), leaf.Raw) {
			t.Errorf("%s: leaf is not the first certificate", name)
		}
		if !bytes.Equal(s.PrivateKey(), wantKey) {
			t.Errorf("%s: key is not the key's PKCS#8", name)
		}
		if s.ID().String() != "spiffe://example.org/w" {
			t.Errorf("%s: ID %q", name, s.ID())
		}
		if !s.NotBefore().Equal(notBefore) || !s.NotAfter().Equal(notAfter) {
			t.Errorf("%s: valid %v to %v, want %v to %v", name, s.NotBefore(), s.NotAfter(), notBefore, notAfter)
		}
		signer, err := s.Signer()
		if err != nil || !signer.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
			t.Errorf("%s: signer is not the leaf's key (%v)", name, err)
		}
		parsed, err := s.ParseCertificates()
		if err != nil || len(parsed) != 2 || !parsed[0].Equal(leaf) || !parsed[1].Equal(inter.Cert) {
			t.Errorf("%s: parsed chain differs (%v)", name, err)
		}
	}
}

// What a load cannot use is refused, as the store's own decoding refused
// it, and a leaf without a SPIFFE ID gives the zero ID (never served).
func TestX509SVIDRefusesWhatCannotServe(t *testing.T) {
	root, err := testpki.NewRoot("root")
	if err != nil {
		t.Fatal(err)
	}
	leaf, key, err := root.Issue(testpki.Leaf{CommonName: "no uri"})
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		chain [][]byte
		key   []byte
	}{
		"no certificate":  {nil, der},
		"bad certificate": {[][]byte{leaf.Raw[:len(leaf.Raw)-1]}, der},
		"bad key":         {[][]byte{leaf.Raw}, der[1:]},
	} {
		if _, err := ParseX509SVID(tc.chain, tc.key); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewX509SVID(nil, key); err == nil {
		t.Error("empty chain accepted")
	}
	s, err := ParseX509SVID([][]byte{leaf.Raw}, der)
	if err != nil {
		t.Fatal(err)
	}
	if !s.ID().IsZero() {
		t.Errorf("leaf without a URI has ID %q", s.ID())
	}
}
