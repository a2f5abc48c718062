package main

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
	"testing"
	"time"

	"github.com/hashicorp/hcl"
	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	"github.com/spiffe/spire-plugin-sdk/plugintest"
	upstreamauthorityv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/upstreamauthority/v1"
	"github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/types"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func load(t *testing.T, hcl string) (*upstreamauthorityv1.UpstreamAuthorityPluginClient, error) {
	t.Helper()
	ua := new(upstreamauthorityv1.UpstreamAuthorityPluginClient)
	cfg := new(configv1.ConfigServiceClient)
	p := New()
	plugintest.ServeInBackground(t, plugintest.Config{
		PluginServer:   upstreamauthorityv1.UpstreamAuthorityPluginServer(p),
		PluginClient:   ua,
		ServiceServers: []pluginsdk.ServiceServer{configv1.ConfigServiceServer(p)},
		ServiceClients: []pluginsdk.ServiceClient{cfg},
	})
	_, err := cfg.Configure(context.Background(), &configv1.ConfigureRequest{
		CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: "example.org"},
		HclConfiguration:  hcl,
	})
	return ua, err
}

// writeRoot writes a self-signed root valid for life, with its key in the
// given PEM encoding, and returns the HCL that points at both files.
func writeRoot(t *testing.T, key crypto.Signer, encoding string, life time.Duration) string {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "file root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(life),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	var keyDER []byte
	switch encoding {
	case "PKCS8":
		keyDER, err = x509.MarshalPKCS8PrivateKey(key)
	case "SEC1":
		keyDER, err = x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	case "PKCS1":
		keyDER = x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))
	}
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "root.pem"), filepath.Join(dir, "root.key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return "cert_file_path = \"" + certPath + "\"\nkey_file_path = \"" + keyPath + "\""
}

func newCSR(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{Organization: []string{"SPIFFE"}},
		URIs:    []*url.URL{{Scheme: "spiffe", Host: "example.org"}},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func mustKey(t *testing.T, rsaBits int) crypto.Signer {
	t.Helper()
	if rsaBits > 0 {
		k, err := rsa.GenerateKey(rand.Reader, rsaBits)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestMintX509CA(t *testing.T) {
	tests := []struct {
		name    string
		hcl     func(t *testing.T) string
		ttl     int32
		wantTTL time.Duration // 0: capped at the root's NotAfter
		rootCN  string
	}{
		{name: "generated root, default TTL", hcl: func(*testing.T) string { return "" }, wantTTL: time.Hour, rootCN: "test upstream root"},
		{name: "generated root, preferred TTL", hcl: func(*testing.T) string { return "" }, ttl: 7200, wantTTL: 2 * time.Hour, rootCN: "test upstream root"},
		{name: "EC SEC1 root", hcl: func(t *testing.T) string { return writeRoot(t, mustKey(t, 0), "SEC1", 48*time.Hour) }, wantTTL: time.Hour, rootCN: "file root"},
		{name: "EC PKCS8 root", hcl: func(t *testing.T) string { return writeRoot(t, mustKey(t, 0), "PKCS8", 48*time.Hour) }, wantTTL: time.Hour, rootCN: "file root"},
		{name: "RSA PKCS1 root", hcl: func(t *testing.T) string { return writeRoot(t, mustKey(t, 2048), "PKCS1", 48*time.Hour) }, wantTTL: time.Hour, rootCN: "file root"},
		{name: "TTL capped at the root", hcl: func(t *testing.T) string { return writeRoot(t, mustKey(t, 0), "PKCS8", 2*time.Hour) }, ttl: 10 * 3600, rootCN: "file root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ua, err := load(t, tt.hcl(t))
			if err != nil {
				t.Fatalf("Configure: %v", err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			before := time.Now().Truncate(time.Second)
			stream, err := ua.MintX509CAAndSubscribe(ctx, &upstreamauthorityv1.MintX509CARequest{Csr: newCSR(t), PreferredTtl: tt.ttl})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("Recv: %v", err)
			}
			if len(resp.X509CaChain) != 1 || len(resp.UpstreamX509Roots) != 1 {
				t.Fatalf("chain %d, roots %d; want 1 and 1", len(resp.X509CaChain), len(resp.UpstreamX509Roots))
			}
			ca, err := x509.ParseCertificate(resp.X509CaChain[0].Asn1)
			if err != nil {
				t.Fatal(err)
			}
			root, err := x509.ParseCertificate(resp.UpstreamX509Roots[0].Asn1)
			if err != nil {
				t.Fatal(err)
			}
			if root.Subject.CommonName != tt.rootCN {
				t.Fatalf("root CN %q, want %q", root.Subject.CommonName, tt.rootCN)
			}
			roots := x509.NewCertPool()
			roots.AddCert(root)
			if _, err := ca.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Fatalf("CA does not chain to the root: %v", err)
			}
			if !ca.IsCA || ca.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
				t.Fatalf("CA flags: IsCA %v, key usage %v", ca.IsCA, ca.KeyUsage)
			}
			if len(ca.URIs) != 1 || ca.URIs[0].String() != "spiffe://example.org" {
				t.Fatalf("CA URIs %v, want the CSR's", ca.URIs)
			}
			if tt.wantTTL == 0 {
				if !ca.NotAfter.Equal(root.NotAfter) {
					t.Fatalf("CA NotAfter %v, want the root's %v", ca.NotAfter, root.NotAfter)
				}
			} else if lo, hi := before.Add(tt.wantTTL), time.Now().Add(tt.wantTTL); ca.NotAfter.Before(lo) || ca.NotAfter.After(hi) {
				t.Fatalf("CA NotAfter %v, want within [%v, %v]", ca.NotAfter, lo, hi)
			}
			// The stream stays open until the host closes it.
			cancel()
			if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
				t.Fatalf("Recv after cancel = %v, want Canceled", err)
			}
		})
	}
}

func TestMintRefusals(t *testing.T) {
	ua, err := load(t, "")
	if err != nil {
		t.Fatal(err)
	}
	csr := newCSR(t)
	tampered := append([]byte(nil), csr...)
	tampered[len(tampered)-1] ^= 0xff
	for name, csr := range map[string][]byte{"empty": nil, "garbage": []byte("nope"), "bad signature": tampered} {
		t.Run(name, func(t *testing.T) {
			stream, err := ua.MintX509CAAndSubscribe(context.Background(), &upstreamauthorityv1.MintX509CARequest{Csr: csr})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument {
				t.Fatalf("Recv = %v, want InvalidArgument", err)
			}
		})
	}
}

func TestConfigureRefusals(t *testing.T) {
	other := writeRoot(t, mustKey(t, 0), "PKCS8", time.Hour)
	mismatch := writeRoot(t, mustKey(t, 0), "PKCS8", time.Hour)
	tests := []struct{ name, hcl string }{
		{name: "cert without key", hcl: `cert_file_path = "/nonexistent/root.pem"`},
		{name: "missing files", hcl: "cert_file_path = \"/nonexistent/a\"\nkey_file_path = \"/nonexistent/b\""},
		{name: "key of another root", hcl: swapKey(t, other, mismatch)},
		{name: "fail_configure", hcl: "fail_configure = true"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := load(t, tt.hcl); status.Code(err) != codes.InvalidArgument {
				t.Fatalf("Configure = %v, want InvalidArgument", err)
			}
		})
	}
}

// swapKey returns the HCL of a's certificate with b's key.
func swapKey(t *testing.T, a, b string) string {
	t.Helper()
	var certA, keyA, certB, keyB string
	if err := parsePaths(a, &certA, &keyA); err != nil {
		t.Fatal(err)
	}
	if err := parsePaths(b, &certB, &keyB); err != nil {
		t.Fatal(err)
	}
	return "cert_file_path = \"" + certA + "\"\nkey_file_path = \"" + keyB + "\""
}

func parsePaths(hclText string, cert, key *string) error {
	var c config
	if err := hcl.Decode(&c, hclText); err != nil {
		return err
	}
	*cert, *key = c.CertFilePath, c.KeyFilePath
	return nil
}

func TestPublishJWTKey(t *testing.T) {
	ua, err := load(t, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	key := &types.JWTKey{PublicKey: []byte("pkix"), KeyId: "kid-1", ExpiresAt: 1234}
	stream, err := ua.PublishJWTKeyAndSubscribe(ctx, &upstreamauthorityv1.PublishJWTKeyRequest{JwtKey: key})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.UpstreamJwtKeys) != 1 || !proto.Equal(resp.UpstreamJwtKeys[0], key) {
		t.Fatalf("upstream keys %v, want [%v]", resp.UpstreamJwtKeys, key)
	}
	cancel()
	if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("Recv after cancel = %v, want Canceled", err)
	}

	stream, err = ua.PublishJWTKeyAndSubscribe(context.Background(), &upstreamauthorityv1.PublishJWTKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Recv without a key = %v, want InvalidArgument", err)
	}
}
