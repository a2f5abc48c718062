package upstream_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/spiffe-hw/spire-hw/hsm"
	"github.com/spiffe-hw/spire-hw/plugin"
	"github.com/spiffe-hw/spire-hw/server/ca/upstream"
	"github.com/spiffe-hw/spire-hw/server/ca/upstream/external"
	"github.com/spiffe-hw/spire-hw/server/ca/upstream/pkcs11"
	"github.com/spiffe-hw/spire-hw/server/ca/upstream/upstreamtest"
	"github.com/spiffe-hw/spire-hw/sim/softhsm"
	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
	"github.com/spiffe-hw/spire-hw/test/plugins/pluginbuild"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	upstreamauthorityv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/upstreamauthority/v1"
)

// TestMain removes the SoftHSM tokens the pkcs11 rows made.
func TestMain(m *testing.M) {
	code := m.Run()
	softhsm.Cleanup()
	os.Exit(code)
}

// writePKI writes ca's certificate (followed by chain) and key as PEM files
// in dir, as an operator provisions them, and returns their paths.
func writePKI(t *testing.T, dir string, ca *testpki.CA, chain ...*testpki.CA) (certPath, keyPath string) {
	t.Helper()
	certs := testpki.CertsPEM(ca.Cert)
	for _, c := range chain {
		certs = append(certs, testpki.CertsPEM(c.Cert)...)
	}
	keyPEM, err := testpki.KeyPEM(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "upstream.crt"), filepath.Join(dir, "upstream.key")
	if err := os.WriteFile(certPath, certs, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

func newRoot(t *testing.T) *testpki.CA {
	t.Helper()
	root, err := testpki.NewRoot("upstream root")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func TestDiskConformance(t *testing.T) {
	t.Run("SelfSignedRoot", func(t *testing.T) {
		upstreamtest.Run(t, func(t *testing.T) upstream.Authority {
			certPath, keyPath := writePKI(t, t.TempDir(), newRoot(t))
			d, err := upstream.NewDisk(certPath, keyPath, "")
			if err != nil {
				t.Fatal(err)
			}
			return d
		})
	})
	// The upstream CA is an intermediate: the minted CA must carry it in
	// its chain to reach the root in the bundle file.
	t.Run("IntermediateAndBundle", func(t *testing.T) {
		upstreamtest.Run(t, func(t *testing.T) upstream.Authority {
			dir := t.TempDir()
			root := newRoot(t)
			inter, err := root.Intermediate("upstream intermediate")
			if err != nil {
				t.Fatal(err)
			}
			certPath, keyPath := writePKI(t, dir, inter)
			bundlePath := filepath.Join(dir, "bundle.crt")
			if err := os.WriteFile(bundlePath, testpki.CertsPEM(root.Cert), 0o600); err != nil {
				t.Fatal(err)
			}
			d, err := upstream.NewDisk(certPath, keyPath, bundlePath)
			if err != nil {
				t.Fatal(err)
			}
			return d
		})
	})
}

// TestPKCS11Conformance runs the suite against a root whose key lives in a
// SoftHSM token; without SoftHSM it is skipped (failed under REQUIRE_SIM=1).
func TestPKCS11Conformance(t *testing.T) {
	upstreamtest.Run(t, func(t *testing.T) upstream.Authority {
		tok := softhsm.NewToken(t)
		a, err := pkcs11.New(pkcs11.Config{
			HSM:        hsm.Config{ModulePath: tok.ModulePath, TokenLabel: tok.Label, PIN: hsm.PIN(tok.PIN), MaxSessions: 4, HealthInterval: -1},
			CreateRoot: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Close() })
		return a
	})
}

// TestExternalConformance runs the suite against test/plugins/upstreamauthority
// started by the plugin host, with the root it generates and with a root
// from files.
func TestExternalConformance(t *testing.T) {
	cmd := pluginbuild.Build(t, "upstreamauthority")
	load := func(t *testing.T, data string) upstream.Authority {
		p, err := plugin.Load(context.Background(), plugin.Config{
			Type:        "UpstreamAuthority",
			Name:        "ext",
			Cmd:         cmd,
			Data:        data,
			TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
			Service:     upstreamauthorityv1.UpstreamAuthority_ServiceDesc.ServiceName,
			Log:         slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		return external.New(p.Conn(), "ext")
	}
	t.Run("GeneratedRoot", func(t *testing.T) {
		upstreamtest.Run(t, func(t *testing.T) upstream.Authority { return load(t, "") })
	})
	t.Run("FileRoot", func(t *testing.T) {
		upstreamtest.Run(t, func(t *testing.T) upstream.Authority {
			certPath, keyPath := writePKI(t, t.TempDir(), newRoot(t))
			return load(t, fmt.Sprintf("cert_file_path = %q\nkey_file_path = %q\n", certPath, keyPath))
		})
	})
}
