package ca_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-hw/spire-hw/internal/testclock"
	"github.com/spiffe-hw/spire-hw/server/ca"
	"github.com/spiffe-hw/spire-hw/server/ca/upstream"
)

// testCA makes a CA certificate signed by parent (self-signed when nil).
func testCA(t *testing.T, name string, parent *x509.Certificate, parentKey crypto.Signer, ttl time.Duration) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(ttl),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

func writePEM(t *testing.T, path, typ string, ders ...[]byte) {
	t.Helper()
	var out []byte
	for _, d := range ders {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: d})...)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestUpstreamDiskChain(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	root, rootKey := testCA(t, "root", nil, nil, 48*time.Hour)
	mid, midKey := testCA(t, "upstream intermediate", root, rootKey, 24*time.Hour)
	keyDER, err := x509.MarshalECPrivateKey(midKey)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath, bundlePath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key"), filepath.Join(dir, "bundle.pem")
	writePEM(t, certPath, "CERTIFICATE", mid.Raw)
	writePEM(t, keyPath, "EC PRIVATE KEY", keyDER)
	writePEM(t, bundlePath, "CERTIFICATE", root.Raw)
	up, err := upstream.NewDisk(certPath, keyPath, bundlePath)
	if err != nil {
		t.Fatal(err)
	}

	e := newEnv()
	e.clock = testclock.New(time.Now()) // the upstream signs with the wall clock
	cfg := e.config()
	cfg.Upstream = up
	m := mustNew(t, cfg)

	b := e.store.bundle(t, td)
	if len(b.X509Authorities) != 1 || string(b.X509Authorities[0].Asn1) != string(root.Raw) {
		t.Fatal("bundle must hold the upstream root, and only it")
	}
	if a := m.X509Authorities(); len(a) != 1 || !a[0].Equal(root) {
		t.Fatal("X509Authorities is not the upstream root")
	}
	caCert := m.ActiveX509CA()
	if err := caCert.CheckSignatureFrom(mid); err != nil {
		t.Fatalf("server CA not signed by the upstream: %v", err)
	}
	if len(caCert.URIs) != 1 || caCert.URIs[0].String() != "spiffe://example.org" {
		t.Fatalf("server CA URI SANs = %v", caCert.URIs)
	}

	key, leafDER := leafKey(t)
	id := spiffeid.RequireFromPath(td, "/w")
	certs, err := m.SignX509SVID(ctx, ca.X509SVIDParams{SPIFFEID: id, PublicKey: key.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 3 || !certs[1].Equal(caCert) || !certs[2].Equal(mid) {
		t.Fatalf("SVID chain has %d certificates, want leaf, server CA, upstream intermediate", len(certs))
	}
	if _, err := x509svid.ParseRaw(concatDER(certs), leafDER); err != nil {
		t.Fatalf("x509svid.ParseRaw: %v", err)
	}
	gotID, chains, err := x509svid.Verify(certs, e.store.x509Bundle(t, td), x509svid.WithTime(time.Now()))
	if err != nil {
		t.Fatalf("x509svid.Verify: %v", err)
	}
	if gotID != id || !chains[0][len(chains[0])-1].Equal(root) {
		t.Fatal("SVID does not verify to the upstream root")
	}
	if _, _, err := x509svid.Verify(certs[:1], e.store.x509Bundle(t, td), x509svid.WithTime(time.Now())); err == nil {
		t.Fatal("leaf verified without its intermediates: the chain test proves nothing")
	}

	// Restart: the journal restores the intermediates.
	m2 := mustNew(t, cfg)
	certs2, err := m2.SignX509SVID(ctx, ca.X509SVIDParams{SPIFFEID: id, PublicKey: key.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if len(certs2) != 3 || !certs2[1].Equal(caCert) {
		t.Fatal("restart lost the upstream chain")
	}
	if _, _, err := x509svid.Verify(certs2, e.store.x509Bundle(t, td), x509svid.WithTime(time.Now())); err != nil {
		t.Fatal(err)
	}
}

func TestUpstreamCapsCALifetime(t *testing.T) {
	dir := t.TempDir()
	root, rootKey := testCA(t, "root", nil, nil, 2*time.Hour)
	keyDER, err := x509.MarshalPKCS8PrivateKey(rootKey)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	writePEM(t, certPath, "CERTIFICATE", root.Raw)
	writePEM(t, keyPath, "PRIVATE KEY", keyDER)
	up, err := upstream.NewDisk(certPath, keyPath, "")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv()
	e.clock = testclock.New(time.Now())
	cfg := e.config()
	cfg.Upstream = up
	m := mustNew(t, cfg)
	if !m.ActiveX509CA().NotAfter.Equal(root.NotAfter) {
		t.Fatalf("server CA NotAfter %s not capped at the upstream's %s", m.ActiveX509CA().NotAfter, root.NotAfter)
	}
	key, _ := leafKey(t)
	certs, err := m.SignX509SVID(context.Background(), ca.X509SVIDParams{SPIFFEID: spiffeid.RequireFromPath(td, "/w"), PublicKey: key.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 {
		t.Fatalf("chain has %d certificates; a root upstream adds only the server CA", len(certs))
	}
	if _, _, err := x509svid.Verify(certs, e.store.x509Bundle(t, td), x509svid.WithTime(time.Now())); err != nil {
		t.Fatal(err)
	}
}

// wrongKeyUpstream returns a CA certificate for some other key.
type wrongKeyUpstream struct {
	t *testing.T
}

func (w wrongKeyUpstream) MintX509CA(context.Context, []byte, time.Duration) ([]*x509.Certificate, []*x509.Certificate, error) {
	root, rootKey := testCA(w.t, "root", nil, nil, time.Hour)
	other, _ := testCA(w.t, "other", root, rootKey, time.Hour)
	return []*x509.Certificate{other}, []*x509.Certificate{root}, nil
}

func TestUpstreamWrongKeyRejected(t *testing.T) {
	e := newEnv()
	cfg := e.config()
	cfg.Upstream = wrongKeyUpstream{t}
	if _, err := ca.New(context.Background(), cfg); err == nil {
		t.Fatal("accepted an upstream certificate for another key")
	}
}
