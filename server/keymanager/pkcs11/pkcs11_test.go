package pkcs11_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/hsm"
	"github.com/spiffe-hw/spire-hw/server/ca"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe-hw/spire-hw/server/keymanager"
	"github.com/spiffe-hw/spire-hw/server/keymanager/keymanagertest"
	"github.com/spiffe-hw/spire-hw/server/keymanager/pkcs11"
	"github.com/spiffe-hw/spire-hw/sim/softhsm"
)

func TestMain(m *testing.M) {
	code := m.Run()
	softhsm.Cleanup()
	os.Exit(code)
}

func hsmConfig(tok *softhsm.Token, prefix string) hsm.Config {
	return hsm.Config{ModulePath: tok.ModulePath, TokenLabel: tok.Label, PIN: hsm.PIN(tok.PIN), KeyLabelPrefix: prefix, MaxSessions: 8, HealthInterval: -1}
}

func TestConformance(t *testing.T) {
	tok := softhsm.NewToken(t)
	var n atomic.Int32
	keymanagertest.Run(t, func(t *testing.T) keymanager.KeyManager {
		// A fresh prefix is an empty key manager on the same token.
		km, err := pkcs11.New(hsmConfig(tok, fmt.Sprintf("conf%d-", n.Add(1))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = km.Close() })
		return km
	})
}

func plugin(t *testing.T, data string) hclconf.Plugin {
	t.Helper()
	f, err := hcl.Parse("plugin_data {\n" + data + "\n}")
	if err != nil {
		t.Fatal(err)
	}
	list := f.Node.(*ast.ObjectList).Items[0].Val.(*ast.ObjectType).List
	return hclconf.Plugin{Type: "KeyManager", Name: "pkcs11", Enabled: true, Data: list, Pos: hclconf.Position{File: "server.conf", Line: 1}}
}

func TestPluginData(t *testing.T) {
	tok := softhsm.NewToken(t)
	t.Setenv("TEST_HSM_PIN", tok.PIN)
	tests := []struct {
		name, data, wantErr string
	}{
		{"fields with pin_file", fmt.Sprintf(`module_path = %q
token_label = %q
pin_file = %q
key_label_prefix = "a-"
max_sessions = 4
session_wait_timeout = "2s"`, tok.ModulePath, tok.Label, tok.PINFile), ""},
		{"fields with pin_env and serial", fmt.Sprintf(`module_path = %q
token_serial = %q
pin_env = "TEST_HSM_PIN"
max_sessions = 4`, tok.ModulePath, tok.Serial), ""},
		{"uri", fmt.Sprintf(`uri = "pkcs11:token=%s?module-path=%s&pin-source=file:%s"
max_sessions = 4`, tok.Label, tok.ModulePath, tok.PINFile), ""},
		{"uri naming one object", fmt.Sprintf(`uri = "pkcs11:token=%s;object=x509-CA-A?module-path=%s&pin-source=env:TEST_HSM_PIN"
max_sessions = 4`, tok.Label, tok.ModulePath), "key_label_prefix"},
		{"uri and fields", fmt.Sprintf(`uri = "pkcs11:token=%s?module-path=%s"
token_label = "x"
max_sessions = 4`, tok.Label, tok.ModulePath), "not both"},
		{"max_sessions missing", fmt.Sprintf(`module_path = %q
token_label = %q
pin_file = %q`, tok.ModulePath, tok.Label, tok.PINFile), "max_sessions"},
		{"two PIN sources", fmt.Sprintf(`module_path = %q
token_label = %q
pin = "1"
pin_env = "TEST_HSM_PIN"
max_sessions = 4`, tok.ModulePath, tok.Label), "only one"},
		{"unknown key", `modul_path = "x"`, "modul_path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			km, err := pkcs11.FromPlugin(plugin(t, tt.data), nil)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				_ = km.Close()
				return
			}
			if err == nil {
				_ = km.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q does not mention %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), tok.PIN) {
				t.Fatal("error shows the PIN")
			}
		})
	}
}

type caEnv struct {
	store *sqlstore.Store
	td    spiffeid.TrustDomain
}

func newCAEnv(t *testing.T) *caEnv {
	return &caEnv{store: sqlitetest.Open(t), td: spiffeid.RequireTrustDomainFromString("example.org")}
}

func (e *caEnv) newCA(km keymanager.KeyManager) (*ca.Manager, error) {
	return ca.New(context.Background(), ca.Config{TrustDomain: e.td, KeyManager: km, Store: e.store})
}

func (e *caEnv) bundle(t *testing.T) *x509bundle.Bundle {
	b, err := e.store.FetchBundle(context.Background(), e.td.Name())
	if err != nil {
		t.Fatal(err)
	}
	xb := x509bundle.New(e.td)
	for _, a := range b.GetX509Authorities() {
		c, err := parseCert(a.GetAsn1())
		if err != nil {
			t.Fatal(err)
		}
		xb.AddX509Authority(c)
	}
	return xb
}

// TestCAWithHSMKeys runs the real CA on HSM keys: SVIDs verify with
// go-spiffe, a restart reuses the keys the journal recorded, and a key
// swapped in the token behind the journal's back stops the CA.
func TestCAWithHSMKeys(t *testing.T) {
	tok := softhsm.NewToken(t)
	env := newCAEnv(t)
	ctx := context.Background()
	cfg := hsmConfig(tok, "spire-")

	km, err := pkcs11.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, err := env.newCA(km)
	if err != nil {
		t.Fatal(err)
	}
	first := m.ActiveX509CA()
	issue := func(m *ca.Manager) error {
		leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		id := spiffeid.RequireFromPath(env.td, "/workload")
		chain, err := m.SignX509SVID(ctx, ca.X509SVIDParams{SPIFFEID: id, PublicKey: leafKey.Public()})
		if err != nil {
			return err
		}
		_, _, err = x509svid.Verify(chain, env.bundle(t))
		return err
	}
	if err := issue(m); err != nil {
		t.Fatal(err)
	}
	if _, err := m.SignJWTSVID(ctx, ca.JWTSVIDParams{SPIFFEID: spiffeid.RequireFromPath(env.td, "/w"), Audience: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	if err := km.Close(); err != nil {
		t.Fatal(err)
	}

	// Restart: the same CA, its key found in the token.
	km, err = pkcs11.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, err = env.newCA(km)
	if err != nil {
		t.Fatal(err)
	}
	if !m.ActiveX509CA().Equal(first) {
		t.Fatal("restarted CA did not reuse the key and certificate in the journal")
	}
	if err := issue(m); err != nil {
		t.Fatal(err)
	}

	// Swap the active JWT key behind the journal (found by the X.509 CA's
	// key, which stays).
	if _, err := km.Token().GenerateKey(ctx, "JWT-Signer-A", hsm.ECP256); err != nil {
		t.Fatal(err)
	}
	_ = km.Close()
	km, err = pkcs11.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer km.Close()
	if _, err := env.newCA(km); !errors.Is(err, ca.ErrKeyMismatch) {
		t.Fatalf("CA on a swapped key: %v, want ErrKeyMismatch", err)
	}
}

// TestTokenRemovedUnderCA: with the token gone, issuance fails fast with
// Unavailable and nothing is issued; once it is back, issuance resumes.
func TestTokenRemovedUnderCA(t *testing.T) {
	tok := softhsm.NewToken(t)
	env := newCAEnv(t)
	ctx := context.Background()
	km, err := pkcs11.New(hsmConfig(tok, "spire-"))
	if err != nil {
		t.Fatal(err)
	}
	defer km.Close()
	m, err := env.newCA(km)
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromPath(env.td, "/workload")
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err := tok.Remove(); err != nil {
		t.Fatal(err)
	}
	restored := false
	defer func() {
		if !restored {
			_ = tok.Restore()
		}
	}()
	for i := range 5 {
		start := time.Now()
		chain, err := m.SignX509SVID(ctx, ca.X509SVIDParams{SPIFFEID: id, PublicKey: leafKey.Public()})
		if chain != nil {
			t.Fatal("a certificate left while the token was gone")
		}
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("sign #%d with the token gone: %v (code %s), want Unavailable", i, err, status.Code(err))
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Fatalf("sign #%d took %s to fail", i, d)
		}
		if _, err := m.SignJWTSVID(ctx, ca.JWTSVIDParams{SPIFFEID: id, Audience: []string{"a"}}); status.Code(err) != codes.Unavailable {
			t.Fatalf("JWT sign with the token gone: %v", err)
		}
	}
	if km.Healthy() || km.Ready(ctx) == nil {
		t.Fatal("key manager ready with the token gone")
	}
	if err := tok.Restore(); err != nil {
		t.Fatal(err)
	}
	restored = true
	deadline := time.Now().Add(15 * time.Second)
	for km.Ready(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not ready 15s after restore: %v", km.Ready(ctx))
		}
		time.Sleep(50 * time.Millisecond)
	}
	chain, err := m.SignX509SVID(ctx, ca.X509SVIDParams{SPIFFEID: id, PublicKey: leafKey.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(chain, env.bundle(t)); err != nil {
		t.Fatal(err)
	}
}
