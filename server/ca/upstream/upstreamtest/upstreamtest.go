// Package upstreamtest is the conformance suite every upstream.Authority
// must pass: disk, pkcs11 and external SDK plugins behind
// server/ca/upstream/external alike, so the CA manager can rely on what any
// of them mints.
//
// Every CA the authority mints is checked with the standard library's
// verifier against the roots it returns, so an authority cannot pass with
// certificates that merely look right. CSRs are made fresh for each case
// with real keys.
package upstreamtest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/ca/upstream"
)

// TrustDomainID is the URI SAN of every CSR the suite sends, the ID of the
// trust domain whose CA is being minted.
const TrustDomainID = "spiffe://example.org"

// Bounds of the suite. They catch wrong answers, not slow ones: a mint
// that takes longer than callBound is hung, and a CA may outlive now+ttl by
// clockSkew (certificate times have one-second resolution, and an
// authority may round).
const (
	ttl       = time.Hour
	clockSkew = time.Minute
	callBound = 10 * time.Second
)

// Run runs the suite. newAuthority must return a ready authority each time
// it is called; it may register cleanups on the t it is given.
func Run(t *testing.T, newAuthority func(t *testing.T) upstream.Authority) {
	t.Helper()
	t.Run("MintX509CA", func(t *testing.T) { testMint(t, newAuthority(t)) })
	t.Run("Refusals", func(t *testing.T) { testRefusals(t, newAuthority(t)) })
}

// testMint mints a CA for each key type the server's CA may use and checks
// it is a CA for exactly that key, valid now and no longer than asked, that
// chains to the returned roots.
func testMint(t *testing.T, a upstream.Authority) {
	for _, tc := range []struct {
		name  string
		curve elliptic.Curve
	}{
		{"EC P-256", elliptic.P256()},
		{"EC P-384", elliptic.P384()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, err := ecdsa.GenerateKey(tc.curve, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			csr := newCSR(t, key)
			ctx, cancel := context.WithTimeout(context.Background(), callBound)
			defer cancel()
			before := time.Now()
			chain, roots, err := a.MintX509CA(ctx, csr, ttl)
			after := time.Now()
			if err != nil {
				t.Fatalf("MintX509CA: %v", err)
			}
			checkRoots(t, roots)
			if len(chain) == 0 || chain[0] == nil {
				t.Fatal("MintX509CA returned an empty chain")
			}
			ca := chain[0]
			if !publicEqual(ca.PublicKey, key.Public()) {
				t.Error("chain[0] is not for the CSR's public key")
			}
			if !ca.BasicConstraintsValid || !ca.IsCA {
				t.Error("chain[0] is not a CA certificate")
			}
			if ca.KeyUsage&x509.KeyUsageCertSign == 0 {
				t.Errorf("chain[0] key usage %#x lacks certSign", ca.KeyUsage)
			}
			if !hasURI(ca, TrustDomainID) {
				t.Errorf("chain[0] URI SANs %v lack the CSR's %s", ca.URIs, TrustDomainID)
			}
			if !ca.NotAfter.After(after) {
				t.Errorf("chain[0] NotAfter %s is not in the future", ca.NotAfter)
			}
			if limit := before.Add(ttl + clockSkew); ca.NotAfter.After(limit) {
				t.Errorf("chain[0] NotAfter %s is past now+ttl (%s)", ca.NotAfter, limit)
			}
			if ca.NotBefore.After(after) {
				t.Errorf("chain[0] NotBefore %s is in the future", ca.NotBefore)
			}
			verify(t, chain, roots, after)
		})
	}
}

// verify checks that chain[0] chains to one of roots through the rest of
// chain, as the CA manager's relying parties will check it.
func verify(t *testing.T, chain, roots []*x509.Certificate, now time.Time) {
	t.Helper()
	rootPool := x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		if c == nil {
			t.Fatal("nil certificate in chain")
		}
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         rootPool,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		t.Errorf("minted CA does not chain to the returned roots: %v", err)
	}
}

// checkRoots fails t unless roots holds at least one CA certificate, and
// every root that claims to be self-issued is self-signed. A root that is
// not self-issued is a trust anchor the upstream chose to publish (an
// intermediate pinned as an anchor); it must still be a CA.
func checkRoots(t *testing.T, roots []*x509.Certificate) {
	t.Helper()
	if len(roots) == 0 {
		t.Fatal("no upstream roots")
	}
	for i, r := range roots {
		switch {
		case r == nil:
			t.Errorf("root %d is nil", i)
		case !r.BasicConstraintsValid || !r.IsCA:
			t.Errorf("root %d (%s) is not a CA certificate", i, r.Subject)
		case string(r.RawSubject) == string(r.RawIssuer):
			if err := r.CheckSignatureFrom(r); err != nil {
				t.Errorf("root %d (%s) is self-issued but not self-signed: %v", i, r.Subject, err)
			}
		}
	}
}

// testRefusals sends CSRs no authority may sign.
func testRefusals(t *testing.T, a upstream.Authority) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := newCSR(t, key)
	// The signature is the CSR's last field: flipping its last byte leaves
	// a CSR that parses but whose signature no longer matches.
	badSig := append([]byte(nil), good...)
	badSig[len(badSig)-1] ^= 0xff
	if parsed, err := x509.ParseCertificateRequest(badSig); err != nil || parsed.CheckSignature() == nil {
		t.Fatalf("suite bug: the bad-signature CSR must parse (%v) and fail its signature check", err)
	}
	for _, tc := range []struct {
		name string
		csr  []byte
	}{
		{"empty", nil},
		{"garbage", []byte("not a certificate request")},
		{"truncated", good[:len(good)/2]},
		{"bad signature", badSig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), callBound)
			defer cancel()
			chain, _, err := a.MintX509CA(ctx, tc.csr, ttl)
			if err == nil {
				t.Fatalf("MintX509CA signed a %s CSR (%d certificates)", tc.name, len(chain))
			}
		})
	}
}

// newCSR returns a DER CSR for key with the trust domain ID as its only URI
// SAN, as the server's CA manager makes one.
func newCSR(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	u, err := url.Parse(TrustDomainID)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{Country: []string{"US"}, Organization: []string{"SPIFFE"}},
		URIs:    []*url.URL{u},
	}, key)
	if err != nil {
		t.Fatalf("create CSR: %v", err)
	}
	return der
}

func hasURI(c *x509.Certificate, want string) bool {
	for _, u := range c.URIs {
		if u.String() == want {
			return true
		}
	}
	return false
}

func publicEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
