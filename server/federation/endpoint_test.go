package federation

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
)

var (
	tdA = spiffeid.RequireTrustDomainFromString("a.test")
	tdB = spiffeid.RequireTrustDomainFromString("b.test")
	// serverB is the ID SPIRE gives B's server SVID.
	serverB = spiffeid.RequireFromString("spiffe://b.test/spire/server")
)

// certHolder swaps the endpoint's certificate, as the SVID rotator does.
type certHolder struct {
	p atomic.Pointer[tls.Certificate]
}

func (h *certHolder) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return h.p.Load(), nil }

// startEndpoint serves ds's bundle of td on loopback until the test ends.
func startEndpoint(t *testing.T, cfg EndpointConfig) *Endpoint {
	t.Helper()
	if cfg.Address == "" {
		cfg.Address = "127.0.0.1:0"
	}
	e, err := NewEndpoint(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return e
}

// serverBEndpoint is trust domain B's server: its CA and bundle in ds, its
// bundle endpoint on https_spiffe with its SVID.
func serverBEndpoint(t *testing.T, ds datastore.DataStore, seq uint64) (*testCA, *Endpoint, *certHolder) {
	t.Helper()
	ca := newTestCA(t, "b.test")
	if _, err := ds.SetBundle(context.Background(), ca.bundle(t, "b.test", seq)); err != nil {
		t.Fatal(err)
	}
	h := &certHolder{}
	h.p.Store(ca.issue(t, serverB.String()))
	e := startEndpoint(t, EndpointConfig{TrustDomain: tdB, DataStore: ds, RefreshHint: 5 * time.Minute, GetCertificate: h.get})
	return ca, e, h
}

func endpointURL(e *Endpoint) string { return "https://" + e.Addr().String() + "/" }

func TestEndpointServesSPIFFEBundle(t *testing.T) {
	ds := sqlitetest.Open(t)
	ca, e, _ := serverBEndpoint(t, ds, 7)
	c := &Client{}
	rel := Relationship{TrustDomain: tdB, EndpointURL: endpointURL(e), EndpointSPIFFEID: serverB}
	got, err := c.Fetch(context.Background(), rel, []*x509.Certificate{ca.cert})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ds.FetchBundle(context.Background(), "b.test")
	want.RefreshHint = 300
	gotPB, err := bundleToProto(got)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(gotPB, want) {
		t.Fatalf("fetched %v\nwant %v", gotPB, want)
	}

	// The document itself carries SPIFFE's parameters.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // reads the raw document only
	resp, err := hc.Get(endpointURL(e))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Sequence    *uint64 `json:"spiffe_sequence"`
		RefreshHint *int64  `json:"spiffe_refresh_hint"`
		Keys        []struct {
			Use string `json:"use"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if doc.Sequence == nil || *doc.Sequence != 7 || doc.RefreshHint == nil || *doc.RefreshHint != 300 || len(doc.Keys) != 2 {
		t.Fatalf("document: sequence %v, refresh hint %v, %d keys", doc.Sequence, doc.RefreshHint, len(doc.Keys))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	for _, tc := range []struct {
		method, path string
		status       int
	}{{http.MethodPost, "/", http.StatusMethodNotAllowed}, {http.MethodGet, "/other", http.StatusNotFound}} {
		req, _ := http.NewRequest(tc.method, "https://"+e.Addr().String()+tc.path, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.status)
		}
	}
}

// TestEndpointFollowsRotation: the endpoint presents whatever certificate
// its source holds now, so a rotated SVID needs no restart.
func TestEndpointFollowsRotation(t *testing.T) {
	ds := sqlitetest.Open(t)
	ca, e, h := serverBEndpoint(t, ds, 1)
	peer := func() *x509.Certificate {
		conn, err := tls.Dial("tcp", e.Addr().String(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // inspects the presented certificate
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0]
	}
	first := h.p.Load().Leaf
	if !peer().Equal(first) {
		t.Fatal("endpoint does not present the current SVID")
	}
	next := ca.issue(t, serverB.String())
	h.p.Store(next)
	if got := peer(); !got.Equal(next.Leaf) || got.Equal(first) {
		t.Fatal("endpoint still presents the old SVID after rotation")
	}
}

func writeCertFiles(t *testing.T, dir string, cert *tls.Certificate, mod time.Time) (string, string) {
	t.Helper()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	keyPEM, err := testpki.KeyPEM(cert.PrivateKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	for path, data := range map[string][]byte{certPath: testpki.CertsPEM(cert.Leaf), keyPath: keyPEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
	return certPath, keyPath
}

// TestServingCertFile: https_web with serving_cert_file, verified as Web
// PKI by a client trusting the test CA; a replaced file is served after
// the next sync, and a broken one keeps the loaded certificate.
func TestServingCertFile(t *testing.T) {
	ds := sqlitetest.Open(t)
	bca := newTestCA(t, "b.test")
	if _, err := ds.SetBundle(context.Background(), bca.bundle(t, "b.test", 1)); err != nil {
		t.Fatal(err)
	}
	webCA := newTestCA(t, "")
	dir := t.TempDir()
	first := webCA.issue(t, "", "127.0.0.1")
	certPath, keyPath := writeCertFiles(t, dir, first, time.Now().Add(-time.Hour))
	if _, err := NewCertFile(filepath.Join(dir, "missing.pem"), keyPath, 0, nil); err == nil {
		t.Fatal("NewCertFile with a missing file succeeded")
	}
	cf, err := NewCertFile(certPath, keyPath, 20*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = cf.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	e := startEndpoint(t, EndpointConfig{TrustDomain: tdB, DataStore: ds, GetCertificate: cf.GetCertificate})

	roots := x509.NewCertPool()
	roots.AddCert(webCA.cert)
	c := &Client{WebRoots: roots}
	rel := Relationship{TrustDomain: tdB, EndpointURL: endpointURL(e)}
	if _, err := c.Fetch(context.Background(), rel, nil); err != nil {
		t.Fatalf("https_web fetch: %v", err)
	}
	// A client with only the system roots does not trust the test CA.
	if _, err := (&Client{}).Fetch(context.Background(), rel, nil); err == nil {
		t.Fatal("fetch trusted a certificate outside the roots")
	}

	served := func() *x509.Certificate {
		conn, err := tls.Dial("tcp", e.Addr().String(), &tls.Config{RootCAs: roots})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0]
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	second := webCA.issue(t, "", "127.0.0.1")
	writeCertFiles(t, dir, second, time.Now())
	waitFor("the replaced certificate", func() bool { return served().Equal(second.Leaf) })

	// A broken file keeps what was loaded.
	if err := os.WriteFile(certPath, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(certPath, later, later); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // several sync intervals
	if !served().Equal(second.Leaf) {
		t.Fatal("a broken certificate file replaced the loaded certificate")
	}
}

// TestEndpointFlood holds the per-source cap's worth of idle connections
// from one loopback address: the next one from it is refused at accept,
// another source is still served, and the idle ones are closed at the
// handshake timeout.
func TestEndpointFlood(t *testing.T) {
	ds := sqlitetest.Open(t)
	bca := newTestCA(t, "b.test")
	if _, err := ds.SetBundle(context.Background(), bca.bundle(t, "b.test", 1)); err != nil {
		t.Fatal(err)
	}
	h := &certHolder{}
	h.p.Store(bca.issue(t, serverB.String()))
	const perSource = 4
	e := startEndpoint(t, EndpointConfig{TrustDomain: tdB, DataStore: ds, GetCertificate: h.get,
		Limits: EndpointLimits{MaxConnectionsPerSource: perSource, HandshakeTimeout: 500 * time.Millisecond}})
	addr := e.Addr().(*net.TCPAddr)
	dialFrom := func(src string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
		c, err := d.Dial("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// closed reports whether the server closes c within d.
	closed := func(c net.Conn, d time.Duration) bool {
		_ = c.SetReadDeadline(time.Now().Add(d))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout())
	}
	var idle []net.Conn
	for range perSource {
		idle = append(idle, dialFrom("127.0.0.1"))
	}
	// Connections are accepted in order; the first are held, not closed.
	if closed(idle[0], 100*time.Millisecond) {
		t.Fatal("a connection within the cap was closed at once")
	}
	if over := dialFrom("127.0.0.1"); !closed(over, 2*time.Second) {
		t.Fatal("a connection over the per-source cap was not refused")
	}
	// Another source is served meanwhile.
	other := &Client{dial: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}
	rel := Relationship{TrustDomain: tdB, EndpointURL: endpointURL(e), EndpointSPIFFEID: serverB}
	if _, err := other.Fetch(context.Background(), rel, []*x509.Certificate{bca.cert}); err != nil {
		t.Fatalf("another source was not served during the flood: %v", err)
	}
	for i, c := range idle {
		if !closed(c, 3*time.Second) {
			t.Fatalf("idle connection %d outlived the handshake timeout", i)
		}
	}
	// Once they are gone the source is served again.
	if _, err := (&Client{}).Fetch(context.Background(), rel, []*x509.Certificate{bca.cert}); err != nil {
		t.Fatalf("source not served after its connections closed: %v", err)
	}
}
