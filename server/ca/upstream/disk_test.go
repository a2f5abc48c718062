package upstream

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type pki struct {
	dir string
}

func newCert(t *testing.T, tmpl *x509.Certificate, parent *x509.Certificate, pub crypto.PublicKey, parentKey crypto.Signer) *x509.Certificate {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.SerialNumber = serial
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func caTmpl(name string) *x509.Certificate {
	return &x509.Certificate{
		Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
}

func ecKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (p pki) write(t *testing.T, name string, blocks ...*pem.Block) string {
	t.Helper()
	var out []byte
	for _, b := range blocks {
		out = append(out, pem.EncodeToMemory(b)...)
	}
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func certBlock(c *x509.Certificate) *pem.Block { return &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw} }

func csrFor(t *testing.T, key crypto.Signer, uris ...string) []byte {
	t.Helper()
	var us []*url.URL
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		us = append(us, parsed)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{Organization: []string{"SPIFFE"}}, URIs: us,
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestKeyFormats(t *testing.T) {
	p := pki{t.TempDir()}
	ec := ecKey(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	sec1, _ := x509.MarshalECPrivateKey(ec)
	pkcs8EC, _ := x509.MarshalPKCS8PrivateKey(ec)
	pkcs8RSA, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	ecRoot := newCert(t, caTmpl("ec root"), nil, ec.Public(), ec)
	rsaRoot := newCert(t, caTmpl("rsa root"), nil, rsaKey.Public(), rsaKey)
	ecCert := p.write(t, "ec.pem", certBlock(ecRoot))
	rsaCert := p.write(t, "rsa.pem", certBlock(rsaRoot))
	rows := []struct {
		name string
		cert string
		key  *pem.Block
		pre  *pem.Block
	}{
		{"SEC1", ecCert, &pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}, nil},
		{"SEC1 after EC PARAMETERS", ecCert, &pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}, &pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}}},
		{"PKCS8 EC", ecCert, &pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8EC}, nil},
		{"PKCS1 RSA", rsaCert, &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}, nil},
		{"PKCS8 RSA", rsaCert, &pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8RSA}, nil},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			blocks := []*pem.Block{r.key}
			if r.pre != nil {
				blocks = []*pem.Block{r.pre, r.key}
			}
			keyPath := p.write(t, "key.pem", blocks...)
			d, err := NewDisk(r.cert, keyPath, "")
			if err != nil {
				t.Fatalf("NewDisk: %v", err)
			}
			chain, roots, err := d.MintX509CA(context.Background(), csrFor(t, ecKey(t), "spiffe://example.org"), time.Hour)
			if err != nil {
				t.Fatalf("MintX509CA: %v", err)
			}
			if len(chain) != 1 || len(roots) != 1 {
				t.Fatalf("chain %d, roots %d; want 1 and 1 for a root upstream", len(chain), len(roots))
			}
			if err := chain[0].CheckSignatureFrom(roots[0]); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestNewDiskRejects(t *testing.T) {
	p := pki{t.TempDir()}
	rootKey, midKey, otherKey := ecKey(t), ecKey(t), ecKey(t)
	root := newCert(t, caTmpl("root"), nil, rootKey.Public(), rootKey)
	otherRoot := newCert(t, caTmpl("other root"), nil, otherKey.Public(), otherKey)
	mid := newCert(t, caTmpl("mid"), root, midKey.Public(), rootKey)
	leafTmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "leaf"}, BasicConstraintsValid: true}
	leaf := newCert(t, leafTmpl, nil, rootKey.Public(), rootKey)
	noSignTmpl := caTmpl("no sign")
	noSignTmpl.KeyUsage = x509.KeyUsageDigitalSignature
	noSign := newCert(t, noSignTmpl, nil, rootKey.Public(), rootKey)
	keyBlock := func(k *ecdsa.PrivateKey) *pem.Block {
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		return &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	}
	rootKeyPath := p.write(t, "root.key", keyBlock(rootKey))
	midKeyPath := p.write(t, "mid.key", keyBlock(midKey))
	rootPath := p.write(t, "root.pem", certBlock(root))
	midPath := p.write(t, "mid.pem", certBlock(mid))
	otherBundle := p.write(t, "other.pem", certBlock(otherRoot))

	rows := []struct {
		name, cert, key, bundle, want string
	}{
		{"missing cert file", filepath.Join(p.dir, "nope"), rootKeyPath, "", "cert_file_path"},
		{"missing key file", rootPath, filepath.Join(p.dir, "nope"), "", "key_file_path"},
		{"no paths", "", "", "", "required"},
		{"key does not match cert", rootPath, midKeyPath, "", "does not match"},
		{"not a CA", p.write(t, "leaf.pem", certBlock(leaf)), rootKeyPath, "", "not a CA"},
		{"CA without keyCertSign", p.write(t, "nosign.pem", certBlock(noSign)), rootKeyPath, "", "keyCertSign"},
		{"intermediate without bundle", midPath, midKeyPath, "", "bundle_file_path is required"},
		{"chain to foreign root", midPath, midKeyPath, otherBundle, "does not chain"},
		{"key file holds a certificate", rootPath, rootPath, "", "no PEM private key"},
		{"encrypted key", rootPath, p.write(t, "enc.key", &pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), "", "encrypted"},
		{"cert file holds a key", rootKeyPath, rootKeyPath, "", "no PEM CERTIFICATE"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			_, err := NewDisk(r.cert, r.key, r.bundle)
			if err == nil || !strings.Contains(err.Error(), r.want) || !strings.HasPrefix(err.Error(), "upstream: disk: ") {
				t.Fatalf("NewDisk = %v, want an error containing %q", err, r.want)
			}
		})
	}
}

func TestMintWithIntermediates(t *testing.T) {
	p := pki{t.TempDir()}
	rootKey, mid1Key, mid2Key := ecKey(t), ecKey(t), ecKey(t)
	root := newCert(t, caTmpl("root"), nil, rootKey.Public(), rootKey)
	mid1 := newCert(t, caTmpl("mid1"), root, mid1Key.Public(), rootKey)
	mid2Tmpl := caTmpl("mid2")
	mid2Tmpl.NotAfter = time.Now().Add(3 * time.Hour)
	mid2 := newCert(t, mid2Tmpl, mid1, mid2Key.Public(), mid1Key)
	der, _ := x509.MarshalPKCS8PrivateKey(mid2Key)
	d, err := NewDisk(
		p.write(t, "chain.pem", certBlock(mid2), certBlock(mid1)),
		p.write(t, "key.pem", &pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		p.write(t, "bundle.pem", certBlock(root)),
	)
	if err != nil {
		t.Fatal(err)
	}
	csrKey := ecKey(t)
	chain, roots, err := d.MintX509CA(context.Background(), csrFor(t, csrKey, "spiffe://example.org"), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 3 || !chain[1].Equal(mid2) || !chain[2].Equal(mid1) || len(roots) != 1 || !roots[0].Equal(root) {
		t.Fatalf("chain %d certs, roots %d; want [new, mid2, mid1] and [root]", len(chain), len(roots))
	}
	ca := chain[0]
	if !ca.PublicKey.(*ecdsa.PublicKey).Equal(csrKey.Public()) || !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Fatal("minted certificate is not a CA for the CSR's key")
	}
	if len(ca.URIs) != 1 || ca.URIs[0].String() != "spiffe://example.org" {
		t.Fatalf("URIs = %v", ca.URIs)
	}
	if !ca.NotAfter.Equal(mid2.NotAfter) {
		t.Fatalf("NotAfter %s not capped at the upstream's %s", ca.NotAfter, mid2.NotAfter)
	}
	pool, inter := x509.NewCertPool(), x509.NewCertPool()
	pool.AddCert(root)
	inter.AddCert(mid1)
	inter.AddCert(mid2)
	if _, err := ca.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatal(err)
	}
}

func TestMintRejects(t *testing.T) {
	p := pki{t.TempDir()}
	rootKey := ecKey(t)
	root := newCert(t, caTmpl("root"), nil, rootKey.Public(), rootKey)
	der, _ := x509.MarshalPKCS8PrivateKey(rootKey)
	d, err := NewDisk(p.write(t, "root.pem", certBlock(root)), p.write(t, "root.key", &pem.Block{Type: "PRIVATE KEY", Bytes: der}), "")
	if err != nil {
		t.Fatal(err)
	}
	good := csrFor(t, ecKey(t), "spiffe://example.org")
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-5] ^= 0xff
	rows := []struct {
		name string
		csr  []byte
		ttl  time.Duration
		want string
	}{
		{"garbage", []byte("not a csr"), time.Hour, "parse CSR"},
		{"bad signature", tampered, time.Hour, "signature"},
		{"no URI", csrFor(t, ecKey(t)), time.Hour, "0 URI SANs"},
		{"two URIs", csrFor(t, ecKey(t), "spiffe://example.org", "spiffe://other.org"), time.Hour, "2 URI SANs"},
		{"workload ID", csrFor(t, ecKey(t), "spiffe://example.org/w"), time.Hour, "not a trust domain ID"},
		{"not SPIFFE", csrFor(t, ecKey(t), "https://example.org"), time.Hour, "URI SAN"},
		{"zero ttl", good, 0, "not positive"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			_, _, err := d.MintX509CA(context.Background(), r.csr, r.ttl)
			if err == nil || !strings.Contains(err.Error(), r.want) {
				t.Fatalf("MintX509CA = %v, want error containing %q", err, r.want)
			}
		})
	}
}
