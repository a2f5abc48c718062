package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-hw/spire-hw/agent/config"
)

var bundleTD = spiffeid.RequireTrustDomainFromString("example.org")

func testRoot(t testing.TB) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "bootstrap root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pemOf(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// TestTrustBundleURL fetches the bootstrap bundle over HTTPS, in both
// formats, and reports a failed download with the URL and status.
func TestTrustBundleURL(t *testing.T) {
	root := testRoot(t)
	spiffe, err := spiffebundle.FromX509Authorities(bundleTD, []*x509.Certificate{root}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/bundle.pem":
			_, _ = w.Write(pemOf(root))
		case "/bundle.json":
			_, _ = w.Write(spiffe)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	for _, tc := range []struct{ path, format string }{{"/bundle.pem", config.TrustBundlePEM}, {"/bundle.json", config.TrustBundleSPIFFE}} {
		b := newBootstrapBundle(config.Agent{TrustDomain: bundleTD, TrustBundleURL: srv.URL + tc.path, TrustBundleFormat: tc.format}, quiet())
		b.client = srv.Client() // trusts the test server's certificate
		certs, err := b.fetch(context.Background(), false)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		if len(certs) != 1 || !certs[0].Equal(root) {
			t.Fatalf("%s: got %d certificates, want the root", tc.path, len(certs))
		}
	}

	b := newBootstrapBundle(config.Agent{TrustDomain: bundleTD, TrustBundleURL: srv.URL + "/missing", TrustBundleFormat: config.TrustBundlePEM}, quiet())
	b.client = srv.Client()
	if _, err := b.fetch(context.Background(), false); err == nil || !strings.Contains(err.Error(), "404 Not Found") {
		t.Fatalf("missing bundle: %v", err)
	}
	// Without the test server's certificate the system roots do not
	// trust it: the download fails rather than trusting anything.
	b = newBootstrapBundle(config.Agent{TrustDomain: bundleTD, TrustBundleURL: srv.URL + "/bundle.pem", TrustBundleFormat: config.TrustBundlePEM}, quiet())
	if _, err := b.fetch(context.Background(), false); err == nil || !strings.Contains(err.Error(), "unable to fetch trust bundle URL") {
		t.Fatalf("untrusted HTTPS server: %v", err)
	}
}

// TestTrustBundleUnixSocket fetches the bundle over HTTP through a Unix
// socket, with SPIRE's query parameters telling the local service what the
// agent is doing.
func TestTrustBundleUnixSocket(t *testing.T) {
	root := testRoot(t)
	sock := filepath.Join(t.TempDir(), "bundle.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var queries []url.Values
	srv := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		queries = append(queries, r.URL.Query())
		mu.Unlock()
		_, _ = w.Write(pemOf(root))
	})}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Close()

	b := newBootstrapBundle(config.Agent{
		TrustDomain: bundleTD, TrustBundleURL: "http://localhost/bundle?site=edge", TrustBundleUnixSocket: sock,
		TrustBundleFormat: config.TrustBundlePEM, ServerAddress: "spire.example.org", ServerPort: 8081,
	}, quiet())
	for _, rebootstrap := range []bool{false, true} {
		certs, err := b.fetch(context.Background(), rebootstrap)
		if err != nil {
			t.Fatal(err)
		}
		if len(certs) != 1 || !certs[0].Equal(root) {
			t.Fatalf("got %d certificates, want the root", len(certs))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(queries) != 2 {
		t.Fatalf("%d requests, want 2", len(queries))
	}
	for i, want := range []map[string]string{
		{"site": "edge", "spire-attest-mode": "bootstrap", "spire-connection-attempts": "1", "spire-server-address": "spire.example.org",
			"spire-server-port": "8081", "spiffe-trust-domain": "example.org"},
		{"spire-attest-mode": "rebootstrap", "spire-connection-attempts": "2"},
	} {
		for k, v := range want {
			if got := queries[i].Get(k); got != v {
				t.Errorf("request %d: %s = %q, want %q", i, k, got, v)
			}
		}
		if _, err := time.Parse(time.RFC3339, queries[i].Get("spire-attest-start-time")); err != nil {
			t.Errorf("request %d: spire-attest-start-time: %v", i, err)
		}
	}
}

func TestParseTrustBundleErrors(t *testing.T) {
	for _, tc := range []struct{ data, format, want string }{
		{"", config.TrustBundlePEM, "no PEM certificate found"},
		{"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", config.TrustBundlePEM, "x509"},
		{`{"keys":[]}`, config.TrustBundleSPIFFE, "no X.509 authority"},
		{"not json", config.TrustBundleSPIFFE, "spiffebundle"},
	} {
		if _, err := parseTrustBundle(bundleTD, []byte(tc.data), tc.format); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseTrustBundle(%q, %s) = %v, want %q", tc.data, tc.format, err, tc.want)
		}
	}
}

// FuzzParseTrustBundle: a downloaded bundle is network input; parsing it
// must never panic, and what it accepts is at least one certificate.
func FuzzParseTrustBundle(f *testing.F) {
	root := testRoot(f)
	f.Add(pemOf(root), false)
	if js, err := spiffebundle.FromX509Authorities(bundleTD, []*x509.Certificate{root}).Marshal(); err == nil {
		f.Add(js, true)
	}
	f.Add([]byte(`{"keys":[{"use":"x509-svid","kty":"EC","crv":"P-256","x":"AA","y":"AA","x5c":["AA=="]}]}`), true)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n\n-----END CERTIFICATE-----\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, spiffe bool) {
		format := config.TrustBundlePEM
		if spiffe {
			format = config.TrustBundleSPIFFE
		}
		certs, err := parseTrustBundle(bundleTD, data, format)
		if err == nil && len(certs) == 0 {
			t.Fatal("accepted a bundle without certificates")
		}
	})
}
