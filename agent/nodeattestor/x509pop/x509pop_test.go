package x509pop_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	agentpop "github.com/spiffe-hw/spire-hw/agent/nodeattestor/x509pop"
	serverpop "github.com/spiffe-hw/spire-hw/server/nodeattestor/x509pop"
	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func write(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAgentAgainstVerifier: certificate and key files as an operator
// provisions them (PKCS#8, PKCS#1 and SEC 1 keys; intermediates inline or
// in intermediates_path) go through the agent's collector and responder
// and the server verifier.
func TestAgentAgainstVerifier(t *testing.T) {
	root, err := testpki.NewRoot("root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.Intermediate("issuing")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root.Cert)
	v, err := serverpop.New(serverpop.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), Roots: roots, MaxIntermediates: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, keyType, keyFormat string }{
		{"ecdsa_pkcs8", "ecdsa", "pkcs8"}, {"ecdsa_sec1", "ecdsa", "sec1"}, {"rsa_pkcs1", "rsa", "pkcs1"}, {"rsa_pkcs8_separate_intermediates", "rsa", "pkcs8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			leaf, key, err := inter.Issue(testpki.Leaf{CommonName: tc.name, KeyType: tc.keyType})
			if err != nil {
				t.Fatal(err)
			}
			var keyPEM []byte
			switch tc.keyFormat {
			case "pkcs8":
				keyPEM, _ = testpki.KeyPEM(key)
			case "sec1":
				der, _ := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
				keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
			case "pkcs1":
				keyPEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))})
			}
			d := agentpop.PluginData{PrivateKeyPath: write(t, dir, "key.pem", keyPEM)}
			if tc.name == "rsa_pkcs8_separate_intermediates" {
				d.CertificatePath = write(t, dir, "cert.pem", testpki.CertsPEM(leaf))
				d.IntermediatesPath = write(t, dir, "inter.pem", testpki.CertsPEM(inter.Cert))
			} else {
				d.CertificatePath = write(t, dir, "cert.pem", testpki.CertsPEM(leaf, inter.Cert))
			}
			a, err := agentpop.New(d)
			if err != nil {
				t.Fatal(err)
			}
			p, err := a.AttestationData(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err := v.Attest(context.Background(), p, nil, a.Respond)
			if err != nil {
				t.Fatal(err)
			}
			if want := "spiffe://example.org/spire/agent/x509pop/" + serverpop.Fingerprint(leaf); res.AgentID.String() != want {
				t.Fatalf("agent ID %s, want %s", res.AgentID, want)
			}
		})
	}
}

func TestConfigRefusals(t *testing.T) {
	root, _ := testpki.NewRoot("root")
	leaf, _, _ := root.Issue(testpki.Leaf{})
	_, otherKey, _ := root.Issue(testpki.Leaf{})
	_, edKey, _ := root.Issue(testpki.Leaf{KeyType: "ed25519"})
	edLeaf, _, _ := root.Issue(testpki.Leaf{KeyType: "ed25519"})
	dir := t.TempDir()
	otherPEM, _ := testpki.KeyPEM(otherKey)
	edPEM, _ := testpki.KeyPEM(edKey)
	cert := write(t, dir, "cert.pem", testpki.CertsPEM(leaf))
	for name, d := range map[string]agentpop.PluginData{
		"missing_paths":  {},
		"key_mismatch":   {CertificatePath: cert, PrivateKeyPath: write(t, dir, "other.pem", otherPEM)},
		"no_certificate": {CertificatePath: write(t, dir, "empty.pem", nil), PrivateKeyPath: write(t, dir, "o2.pem", otherPEM)},
		"garbage_key":    {CertificatePath: cert, PrivateKeyPath: write(t, dir, "g.pem", []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))},
		"ed25519_key":    {CertificatePath: write(t, dir, "ed.pem", testpki.CertsPEM(edLeaf)), PrivateKeyPath: write(t, dir, "edk.pem", edPEM)},
	} {
		if _, err := agentpop.New(d); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
