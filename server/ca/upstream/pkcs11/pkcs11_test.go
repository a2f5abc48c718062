package pkcs11_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/hsm"
	"github.com/spiffe-hw/spire-hw/server/ca"
	"github.com/spiffe-hw/spire-hw/server/ca/upstream/pkcs11"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe-hw/spire-hw/server/keymanager/memory"
	"github.com/spiffe-hw/spire-hw/sim/softhsm"
)

func TestMain(m *testing.M) {
	code := m.Run()
	softhsm.Cleanup()
	os.Exit(code)
}

func plugin(t *testing.T, data string) hclconf.Plugin {
	t.Helper()
	f, err := hcl.Parse("plugin_data {\n" + data + "\n}")
	if err != nil {
		t.Fatal(err)
	}
	list := f.Node.(*ast.ObjectList).Items[0].Val.(*ast.ObjectType).List
	return hclconf.Plugin{Type: "UpstreamAuthority", Name: "pkcs11", Enabled: true, Data: list, Pos: hclconf.Position{File: "server.conf", Line: 1}}
}

func TestHSMRootSignsIntermediate(t *testing.T) {
	tok := softhsm.NewToken(t)
	ctx := context.Background()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	data := fmt.Sprintf(`uri = "pkcs11:token=%s;object=root-1?module-path=%s&pin-source=file:%s"
max_sessions = 4
create_root = true
root_ttl = "720h"`, tok.Label, tok.ModulePath, tok.PINFile)

	up, err := pkcs11.FromPlugin(plugin(t, data), nil)
	if err != nil {
		t.Fatal(err)
	}
	root := up.Root()
	m, err := ca.New(ctx, ca.Config{TrustDomain: td, KeyManager: memory.New(), Upstream: up, Store: sqlitetest.Open(t)})
	if err != nil {
		t.Fatal(err)
	}
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	chain, err := m.SignX509SVID(ctx, ca.X509SVIDParams{SPIFFEID: spiffeid.RequireFromPath(td, "/w"), PublicKey: leafKey.Public()})
	if err != nil {
		t.Fatal(err)
	}
	// Only the HSM root is a trust anchor.
	if _, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, []*x509.Certificate{root})); err != nil {
		t.Fatalf("SVID does not chain to the HSM root: %v", err)
	}
	if got := m.X509Authorities(); len(got) != 1 || !got[0].Equal(root) {
		t.Fatal("bundle does not publish exactly the HSM root")
	}
	if err := up.Close(); err != nil {
		t.Fatal(err)
	}
	if err := up.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	// A restart reuses the root key and certificate from the token.
	up, err = pkcs11.FromPlugin(plugin(t, data), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	if !up.Root().Equal(root) {
		t.Fatal("restart created a new root instead of reusing the one in the token")
	}
}

func TestRootErrors(t *testing.T) {
	tok := softhsm.NewToken(t)
	base := pkcs11.Config{HSM: hsm.Config{ModulePath: tok.ModulePath, TokenLabel: tok.Label, PIN: hsm.PIN(tok.PIN), MaxSessions: 4, HealthInterval: -1}}

	t.Run("key not found", func(t *testing.T) {
		cfg := base
		cfg.KeyLabel = "absent-root"
		_, err := pkcs11.New(cfg)
		if !errors.Is(err, hsm.ErrKeyNotFound) || !strings.Contains(err.Error(), "absent-root") || !strings.Contains(err.Error(), "create_root") {
			t.Fatalf("error = %v; want ErrKeyNotFound naming the label and create_root", err)
		}
	})
	t.Run("certificate of another key", func(t *testing.T) {
		cfg := base
		cfg.KeyLabel, cfg.CreateRoot = "swapped", true
		a, err := pkcs11.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_ = a.Close()
		tk, err := hsm.Open(base.HSM)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tk.GenerateKey(context.Background(), "swapped", hsm.ECP256); err != nil {
			t.Fatal(err)
		}
		_ = tk.Close()
		if _, err := pkcs11.New(cfg); err == nil || !strings.Contains(err.Error(), "not for the key") {
			t.Fatalf("root on a swapped key: %v", err)
		}
	})
	t.Run("CSR checks", func(t *testing.T) {
		cfg := base
		cfg.KeyLabel, cfg.CreateRoot = "csr-root", true
		a, err := pkcs11.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		csr := func(uris ...string) []byte {
			tmpl := &x509.CertificateRequest{}
			for _, u := range uris {
				tmpl.URIs = append(tmpl.URIs, spiffeid.RequireFromString(u).URL())
			}
			der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
			if err != nil {
				t.Fatal(err)
			}
			return der
		}
		tampered := csr("spiffe://example.org")
		tampered[len(tampered)-5] ^= 0xff
		tests := []struct {
			name    string
			der     []byte
			wantErr string
		}{
			{"trust domain ID", csr("spiffe://example.org"), ""},
			{"workload ID", csr("spiffe://example.org/w"), "not a trust domain ID"},
			{"no URI SAN", csr(), "0 URI SANs"},
			{"two URI SANs", csr("spiffe://example.org", "spiffe://other.org"), "2 URI SANs"},
			{"bad signature", tampered, "CSR"},
			{"garbage", []byte{0x30, 0x03, 0x02, 0x01, 0x01}, "parse CSR"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				chain, roots, err := a.MintX509CA(context.Background(), tt.der, time.Hour)
				if tt.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
						t.Fatalf("error = %v, want %q", err, tt.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				pool := x509.NewCertPool()
				pool.AddCert(roots[0])
				if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
					t.Fatalf("minted CA does not verify: %v", err)
				}
				if !chain[0].IsCA || chain[0].NotAfter.Sub(chain[0].NotBefore) > time.Hour+time.Minute {
					t.Fatal("minted certificate is not a CA of the asked lifetime")
				}
			})
		}
	})
}

// TestRootRenewal: a root created by the authority is renewed with the same
// key when it nears its end; the renewed root is stored in the token, both
// roots are published until the old one expires, and an intermediate
// minted after the renewal chains to either. An imported root is never
// replaced: intermediates are cut short to its end.
func TestRootRenewal(t *testing.T) {
	tok := softhsm.NewToken(t)
	now := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg := pkcs11.Config{
		HSM:      hsm.Config{ModulePath: tok.ModulePath, TokenLabel: tok.Label, PIN: hsm.PIN(tok.PIN), MaxSessions: 4, HealthInterval: -1},
		KeyLabel: "renewing-root", CreateRoot: true, RootTTL: 60 * time.Hour,
		Now: func() time.Time { return now },
	}
	a, err := pkcs11.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	first := a.Root()
	ctx := context.Background()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{spiffeid.RequireTrustDomainFromString("example.org").ID().URL()}}, key)
	if err != nil {
		t.Fatal(err)
	}
	verifies := func(c *x509.Certificate, root *x509.Certificate) bool {
		pool := x509.NewCertPool()
		pool.AddCert(root)
		_, err := c.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		return err == nil
	}

	// Early in the root's life: no renewal.
	_, roots, err := a.MintX509CA(ctx, csr, time.Hour)
	if err != nil || len(roots) != 1 || !roots[0].Equal(first) {
		t.Fatalf("before the window: roots %d, %v", len(roots), err)
	}

	// Inside the last sixth (10 h of 60 h): renewed.
	now = now.Add(51 * time.Hour)
	chain, roots, err := a.MintX509CA(ctx, csr, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	renewed := a.Root()
	if renewed.Equal(first) || len(roots) != 2 || !roots[0].Equal(renewed) || !roots[1].Equal(first) {
		t.Fatalf("after the window: want [renewed, first], got %d roots", len(roots))
	}
	if !publicKeyEqual(renewed.PublicKey, first.PublicKey) || renewed.Subject.String() != first.Subject.String() {
		t.Fatal("the renewed root changed key or subject")
	}
	if renewed.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("the renewed root reuses the serial number")
	}
	if !renewed.NotAfter.Equal(now.Add(cfg.RootTTL).Truncate(time.Second)) {
		t.Fatalf("renewed root ends %s, want %s", renewed.NotAfter, now.Add(cfg.RootTTL))
	}
	if !verifies(chain[0], renewed) || !verifies(chain[0], first) {
		t.Fatal("an intermediate minted after renewal does not chain to both roots")
	}
	// The token holds the renewed root: a restart finds it.
	b, err := pkcs11.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Root().Equal(renewed) {
		t.Fatal("the token does not hold the renewed root")
	}
	b.Close()
	// Once the first root has expired it is no longer published.
	now = first.NotAfter.Add(time.Minute)
	if _, roots, err = a.MintX509CA(ctx, csr, time.Hour); err != nil || len(roots) != 1 || !roots[0].Equal(renewed) {
		t.Fatalf("after the first root's end: %d roots, %v", len(roots), err)
	}

	// An imported root (create_root = false) is kept, and intermediates
	// are cut to its end.
	imported := cfg
	imported.CreateRoot = false
	now = renewed.NotAfter.Add(-30 * time.Minute)
	c, err := pkcs11.New(imported)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	chain, roots, err = c.MintX509CA(ctx, csr, time.Hour)
	if err != nil || len(roots) != 1 || !roots[0].Equal(renewed) {
		t.Fatalf("imported root: %d roots, %v", len(roots), err)
	}
	if !chain[0].NotAfter.Equal(renewed.NotAfter) {
		t.Fatalf("intermediate ends %s, want the root's end %s", chain[0].NotAfter, renewed.NotAfter)
	}
	// The operator imports a renewed certificate for the key (here issued
	// by a creating authority on the same token): the next mint uses it
	// without a restart, and publishes both.
	if _, _, err := a.MintX509CA(ctx, csr, time.Hour); err != nil {
		t.Fatal(err)
	}
	third := a.Root()
	if third.Equal(renewed) {
		t.Fatal("the creating authority did not renew")
	}
	chain, roots, err = c.MintX509CA(ctx, csr, time.Hour)
	if err != nil || len(roots) != 2 || !roots[0].Equal(third) || !roots[1].Equal(renewed) {
		t.Fatalf("after the import: %d roots, %v", len(roots), err)
	}
	if !chain[0].NotAfter.Equal(now.Add(time.Hour).Truncate(time.Second)) {
		t.Fatalf("intermediate under the imported root ends %s, want a full hour", chain[0].NotAfter)
	}

	// Intermediates as long-lived as the root: the window is capped at
	// half the root's life, so a renewed root is not renewed again at
	// the next mint.
	if _, _, err := a.MintX509CA(ctx, csr, 40*time.Hour); err != nil {
		t.Fatal(err)
	}
	if again := a.Root(); !again.Equal(third) {
		t.Fatal("a root renewed a moment ago was renewed again")
	}
}

func publicKeyEqual(a, b any) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}
