package oidcprovider

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
)

// writeBundle writes a SPIFFE bundle file holding one JWT authority per kid.
func writeBundle(t *testing.T, path string, kids ...string) {
	t.Helper()
	b := spiffebundle.New(spiffeid.RequireTrustDomainFromString("example.org"))
	for _, kid := range kids {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.AddJWTAuthority(kid, k.Public()); err != nil {
			t.Fatal(err)
		}
	}
	data, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".tmp", data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// startProvider parses conf, starts the provider and runs it until the
// test ends; polled hears of every poll.
func startProvider(t *testing.T, conf string, log *syncbuf.Buffer, opts ...Option) (*Provider, <-chan struct{}) {
	t.Helper()
	cfg, err := ParseConfig("test.conf", []byte(conf), false)
	if err != nil {
		t.Fatal(err)
	}
	polled := make(chan struct{}, 1)
	opts = append(opts, func(p *Provider) { p.polled = polled })
	logger := discard()
	if log != nil {
		logger = newTestLogger(log)
	}
	p, err := New(cfg, logger, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return p, polled
}

// keyIDs fetches /keys with client and returns the kids it lists.
func keyIDs(t *testing.T, client *http.Client, url string) ([]string, error) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, err
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.Kid)
	}
	return kids, nil
}

// awaitKeys waits, poll by poll, until /keys lists exactly want.
func awaitKeys(t *testing.T, client *http.Client, url string, polled <-chan struct{}, want string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		kids, err := keyIDs(t, client, url)
		if err == nil && strings.Join(kids, ",") == want {
			return
		}
		select {
		case <-polled:
		case <-deadline:
			t.Fatalf("keys %v (%v), want %s", kids, err, want)
		}
	}
}

func TestFileSourceAndHealth(t *testing.T) {
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle.json")
	writeBundle(t, bundle, "k1")
	healthPort := freePort(t)
	p, polled := startProvider(t, fmt.Sprintf(`
domains = ["localhost"]
insecure_addr = "127.0.0.1:0"
allow_insecure_scheme = true
file {
    path = %q
    poll_interval = "20ms"
}
health_checks { bind_port = %d }
`, bundle, healthPort), nil)
	base := "http://" + p.Addr().String()
	awaitKeys(t, http.DefaultClient, base+"/keys", polled, "k1")
	writeBundle(t, bundle, "k2", "k3")
	awaitKeys(t, http.DefaultClient, base+"/keys", polled, "k2,k3")

	req, _ := http.NewRequest("GET", base+"/.well-known/openid-configuration", nil)
	req.Host = "localhost:8080"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var doc discoveryDocument
	err = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if err != nil || doc.Issuer != "http://localhost:8080" || doc.JWKSURI != "http://localhost:8080/keys" {
		t.Fatalf("document %+v (%v)", doc, err)
	}

	for _, path := range []string{"/ready", "/live"} {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", healthPort, path))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
	}
}

// TestFlood: one source address opening many connections and sending
// nothing gets only its share, each held connection is dropped at the
// header timeout, an oversized header is refused, and a client from
// another address is served throughout.
func TestFlood(t *testing.T) {
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle.json")
	writeBundle(t, bundle, "k1")
	var logs syncbuf.Buffer
	limits := DefaultLimits
	limits.MaxConnsPerPeer = 4
	limits.ReadHeaderTimeout = 2 * time.Second
	limits.MaxHeaderBytes = 4 << 10
	p, polled := startProvider(t, fmt.Sprintf(`
domains = ["localhost"]
insecure_addr = "127.0.0.1:0"
file { path = %q }
`, bundle), &logs, WithLimits(limits))
	addr := p.Addr().String()
	legit := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	awaitKeys(t, legit, "http://"+addr+"/keys", polled, "k1")

	flooder := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	const flood = 40
	conns := make([]net.Conn, 0, flood)
	for range flood {
		c, err := flooder.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// While the flood is held, the legitimate client is served at once.
	start := time.Now()
	if kids, err := keyIDs(t, legit, "http://"+addr+"/keys"); err != nil || len(kids) != 1 {
		t.Fatalf("legitimate client during the flood: %v %v", kids, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("legitimate request took %v during the flood", d)
	}
	// Every flood connection ends: over the cap at once, the rest at the
	// header timeout.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var quick, slow int
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			begin := time.Now()
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := c.Read(make([]byte, 1))
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Error("a flood connection outlived the header timeout")
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if time.Since(begin) < limits.ReadHeaderTimeout/2 {
				quick++
			} else {
				slow++
			}
		}()
	}
	wg.Wait()
	if slow > limits.MaxConnsPerPeer || quick < flood-limits.MaxConnsPerPeer {
		t.Errorf("%d connections dropped at once, %d held to the timeout; want at most %d held", quick, slow, limits.MaxConnsPerPeer)
	}
	if !strings.Contains(logs.String(), "per-peer connection limit reached") || !strings.Contains(logs.String(), "source=127.0.0.2") {
		t.Errorf("no refusal logged for the flooding source:\n%s", logs.String())
	}

	// A header over the cap is refused without reaching the handler.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /keys HTTP/1.1\r\nHost: localhost\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 8<<10))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("oversized header: %d, want 431", resp.StatusCode)
	}
}

// selfSigned writes a certificate for localhost and its key, with a
// serial to tell reloads apart.
func selfSigned(t *testing.T, certPath, keyPath string, serial int64) *x509.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), crypto.Signer(k))
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

func TestServingCertFile(t *testing.T) {
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle.json")
	writeBundle(t, bundle, "k1")
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	selfSigned(t, certPath, keyPath, 1)
	p, polled := startProvider(t, fmt.Sprintf(`
domains = ["localhost"]
allow_insecure_scheme = true
serving_cert_file {
    cert_file_path = %q
    key_file_path = %q
    addr = "127.0.0.1:0"
    file_sync_interval = "20ms"
}
file { path = %q }
`, certPath, keyPath, bundle), nil)
	addr := p.Addr().String()
	// serialSeen dials and returns the serial of the served certificate.
	serialSeen := func() int64 {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	if s := serialSeen(); s != 1 {
		t.Fatalf("serial %d, want 1", s)
	}
	pool := x509.NewCertPool()
	pem1, _ := os.ReadFile(certPath)
	pool.AppendCertsFromPEM(pem1)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	awaitKeys(t, client, "https://localhost:"+portOf(addr)+"/keys", polled, "k1")
	resp, err := client.Get("https://localhost:" + portOf(addr) + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var doc discoveryDocument
	err = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if err != nil || !strings.HasPrefix(doc.Issuer, "https://localhost:") {
		t.Fatalf("over TLS the issuer is https whatever allow_insecure_scheme says: %+v %v", doc, err)
	}

	// A renewed pair is picked up without a restart; a broken one is not.
	time.Sleep(10 * time.Millisecond) // a modification time the first write cannot share
	selfSigned(t, certPath, keyPath, 2)
	deadline := time.Now().Add(10 * time.Second)
	for serialSeen() != 2 {
		if time.Now().After(deadline) {
			t.Fatal("renewed certificate not served")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := os.WriteFile(certPath, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // several sync intervals
	if s := serialSeen(); s != 2 {
		t.Fatalf("after a broken write: serial %d, want the previous 2", s)
	}
}

func TestListenSocketPath(t *testing.T) {
	dir, err := os.MkdirTemp("", "odp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bundle := filepath.Join(dir, "bundle.json")
	writeBundle(t, bundle, "k1")
	sock := filepath.Join(dir, "run", "odp.sock")
	cfg, err := ParseConfig("test.conf", []byte(fmt.Sprintf(`
domains = ["localhost"]
listen_socket_path = %q
allow_insecure_scheme = true
file { path = %q }
`, sock, bundle)), false)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(cfg, discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o777 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket %v %v", fi, err)
	}
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := client.Get("http://localhost/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var doc discoveryDocument
	err = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if err != nil || doc.Issuer != "http://localhost" {
		t.Fatalf("%+v %v", doc, err)
	}
	client.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}

	// A path that is not a socket is refused, never replaced.
	if err := os.WriteFile(sock, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg, discard()); err == nil {
		t.Fatal("started over a regular file")
	}
	if b, _ := os.ReadFile(sock); string(b) != "keep" {
		t.Fatal("regular file at listen_socket_path was replaced")
	}
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
