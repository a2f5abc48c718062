package interop

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
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// The bundle endpoints serve this refresh hint, so that a stored bundle
// carrying it shows that it came from the endpoint and not from the
// bootstrap copy (SPIRE's default hint is 5m).
const fedRefreshHint = 7 * time.Minute

// fedSide is one trust domain of a federation run: its server, with a
// bundle endpoint on fedPort, and later its agent and workload.
type fedSide struct {
	*server
	fedPort int
	// cliRoute: this side's relationship comes from `spire-server
	// federation create` instead of a federates_with block.
	cliRoute bool
}

func (s *fedSide) tdID() string             { return "spiffe://" + s.td }
func (s *fedSide) endpointURL() string      { return fmt.Sprintf("https://127.0.0.1:%d", s.fedPort) }
func (s *fedSide) endpointSPIFFEID() string { return s.tdID() + "/spire/server" }
func (s *fedSide) workloadID() spiffeid.ID  { return spiffeid.RequireFromString(s.tdID() + "/workload") }
func (s *fedSide) spiffeTD() spiffeid.TrustDomain {
	return spiffeid.RequireTrustDomainFromString(s.td)
}

// TestFederation federates our server (a.test) with upstream SPIRE's
// (b.test) in both directions, over https_spiffe and over https_web, with
// each side's relationship coming once from its configuration
// (federates_with) and once from its own CLI (`federation create`). In each
// run both servers fetch each other's bundle from the other's bundle
// endpoint, an agent of each side's implementation serves a workload whose
// entry federates with the other trust domain, and the two workloads, with
// go-spiffe, complete an mTLS handshake in both roles, each verifying the
// other's X.509-SVID with the federated bundle its agent handed it. A last
// run, upstream on both sides, is the reference that the harness itself
// works.
func TestFederation(t *testing.T) {
	for _, tc := range []struct {
		name      string
		a, b      *impl
		profile   string
		aFromConf bool // a's relationship from config, b's from the CLI; else the reverse
	}{
		{"https_spiffe/ours-config/upstream-cli", &ours, &upstream, "https_spiffe", true},
		{"https_spiffe/ours-cli/upstream-config", &ours, &upstream, "https_spiffe", false},
		{"https_web/ours-config/upstream-cli", &ours, &upstream, "https_web", true},
		{"https_web/ours-cli/upstream-config", &ours, &upstream, "https_web", false},
		{"https_spiffe/upstream-both", &upstream, &upstream, "https_spiffe", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			federationFlow(t, *tc.a, *tc.b, tc.profile, tc.aFromConf)
		})
	}
}

func federationFlow(t *testing.T, implA, implB impl, profile string, aFromConf bool) {
	a := newFedSide(t, implA, "a.test", !aFromConf)
	b := newFedSide(t, implB, "b.test", aFromConf)

	var env []string
	if profile == "https_web" {
		// SPIRE verifies https_web endpoints with the system roots; a
		// private SSL_CERT_FILE holding the test CA stands in for a system
		// store, for these two processes only.
		caFile := filepath.Join(a.dir, "webpki-ca.pem")
		ca := newTestCA(t, caFile)
		for _, s := range []*fedSide{a, b} {
			ca.issueServing(t, filepath.Join(s.dir, "endpoint.crt"), filepath.Join(s.dir, "endpoint.key"))
		}
		env = []string{"SSL_CERT_FILE=" + caFile}
	}
	writeFedConf(t, a, b, profile)
	writeFedConf(t, b, a, profile)
	a.env, b.env = env, env
	b.start(t)
	a.start(t)

	for _, pair := range [][2]*fedSide{{a, b}, {b, a}} {
		establish(t, pair[0], pair[1], profile)
	}
	for _, pair := range [][2]*fedSide{{a, b}, {b, a}} {
		checkFetched(t, pair[0], pair[1])
	}
	checkRelationshipLists(t, a, b, profile)

	xa := federatedWorkload(t, a, b)
	xb := federatedWorkload(t, b, a)
	handshake(t, a, xa, b, xb)
	handshake(t, b, xb, a, xa)
}

// newFedSide prepares (without starting) a server of im for td.
func newFedSide(t *testing.T, im impl, td string, cliRoute bool) *fedSide {
	t.Helper()
	dir := shortTempDir(t)
	return &fedSide{
		server: &server{impl: im, dir: dir, socket: filepath.Join(dir, "api.sock"),
			conf: filepath.Join(dir, "server.conf"), port: freePort(t), td: td},
		fedPort:  freePort(t),
		cliRoute: cliRoute,
	}
}

// writeFedConf writes s's configuration: a bundle endpoint of the given
// profile and, unless s takes the CLI route, a federates_with block for
// peer. Both implementations read the same text.
func writeFedConf(t *testing.T, s, peer *fedSide, profile string) {
	t.Helper()
	endpointProfile := `profile "https_spiffe" {}`
	peerProfile := fmt.Sprintf(`bundle_endpoint_profile "https_spiffe" {
                endpoint_spiffe_id = %q
            }`, peer.endpointSPIFFEID())
	if profile == "https_web" {
		// SPIRE v1.13.3 refuses serving_cert_file without
		// file_sync_interval ("time: invalid duration"), though its
		// document gives a default; ours applies the default.
		endpointProfile = fmt.Sprintf(`profile "https_web" {
                serving_cert_file {
                    cert_file_path = %q
                    key_file_path = %q
                    file_sync_interval = "1h"
                }
            }`, filepath.Join(s.dir, "endpoint.crt"), filepath.Join(s.dir, "endpoint.key"))
		peerProfile = `bundle_endpoint_profile "https_web" {}`
	}
	federatesWith := ""
	if !s.cliRoute {
		federatesWith = fmt.Sprintf(`        federates_with %q {
            bundle_endpoint_url = %q
            %s
        }
`, peer.td, peer.endpointURL(), peerProfile)
	}
	conf := fmt.Sprintf(`server {
    bind_address = "127.0.0.1"
    bind_port = "%d"
    socket_path = %q
    trust_domain = %q
    data_dir = %q
    log_level = "DEBUG"
    ca_ttl = "24h"
    default_x509_svid_ttl = "1h"
    federation {
        bundle_endpoint {
            address = "127.0.0.1"
            port = %d
            refresh_hint = %q
            %s
        }
%s    }
}
plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = %q
        }
    }
    KeyManager "disk" {
        plugin_data {
            keys_path = %q
        }
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
}
`, s.port, s.socket, s.td, filepath.Join(s.dir, "data"), s.fedPort, fedRefreshHint.String(), endpointProfile,
		federatesWith, filepath.Join(s.dir, "data", "datastore.sqlite3"), filepath.Join(s.dir, "data", "keys.json"))
	if err := os.WriteFile(s.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

// establish makes s fetch peer's bundle: for https_spiffe, s first gets
// peer's X.509 authorities out of band (PEM: no JWT keys, no sequence
// number, so that the stored bundle shows whether a fetch replaced it),
// with `bundle set` on the config route or in `federation create` on the
// CLI route; then `federation refresh` must succeed, which in SPIRE means a
// fetch from peer's endpoint did.
func establish(t *testing.T, s, peer *fedSide, profile string) {
	t.Helper()
	bootstrap := filepath.Join(s.dir, peer.td+".pem")
	if profile == "https_spiffe" {
		pemBundle := peer.cli(t, peer.impl, "bundle", "show")
		if err := os.WriteFile(bootstrap, []byte(pemBundle), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	switch {
	case s.cliRoute && profile == "https_spiffe":
		s.cli(t, s.impl, "federation", "create", "-trustDomain", peer.td,
			"-bundleEndpointURL", peer.endpointURL(), "-bundleEndpointProfile", "https_spiffe",
			"-endpointSpiffeID", peer.endpointSPIFFEID(),
			"-trustDomainBundlePath", bootstrap, "-trustDomainBundleFormat", "pem")
	case s.cliRoute:
		s.cli(t, s.impl, "federation", "create", "-trustDomain", peer.td,
			"-bundleEndpointURL", peer.endpointURL(), "-bundleEndpointProfile", "https_web")
	case profile == "https_spiffe":
		s.cli(t, s.impl, "bundle", "set", "-id", peer.tdID(), "-path", bootstrap, "-format", "pem")
	}
	eventually(t, 60*time.Second, fmt.Sprintf("%s (%s) refreshing %s's bundle", s.td, s.impl.name, peer.td), func() error {
		r := runCLI(t, s.dir, s.impl.server(), "federation", "refresh", "-id", peer.td, "-socketPath", s.socket)
		if r.code != 0 {
			return fmt.Errorf("exit %d: %s%s", r.code, r.stdout, r.stderr)
		}
		if strings.TrimSpace(r.stdout) != "Bundle refreshed" {
			return fmt.Errorf("federation refresh printed %q, SPIRE prints \"Bundle refreshed\"", r.stdout)
		}
		return nil
	})
}

// checkFetched compares the bundle s stored for peer with what peer holds:
// the same X.509 and JWT authorities and sequence number, and the refresh
// hint only the endpoint serves.
func checkFetched(t *testing.T, s, peer *fedSide) {
	t.Helper()
	got, err := spiffebundle.Parse(peer.spiffeTD(),
		[]byte(s.cli(t, s.impl, "bundle", "list", "-id", peer.tdID(), "-format", "spiffe")))
	if err != nil {
		t.Fatalf("%s's stored bundle of %s: %v", s.td, peer.td, err)
	}
	want, err := spiffebundle.Parse(peer.spiffeTD(), []byte(peer.cli(t, peer.impl, "bundle", "show", "-format", "spiffe")))
	if err != nil {
		t.Fatalf("%s's own bundle: %v", peer.td, err)
	}
	if !sameCerts(got.X509Authorities(), want.X509Authorities()) {
		t.Errorf("%s (%s) holds other X.509 authorities for %s than %s (%s) has", s.td, s.impl.name, peer.td, peer.td, peer.impl.name)
	}
	if len(want.JWTAuthorities()) == 0 {
		t.Fatalf("%s has no JWT authorities to compare", peer.td)
	}
	if !jwtEqual(got, want) {
		t.Errorf("%s (%s) holds JWT authorities %v for %s, %s has %v: the bundle was not fetched from the endpoint",
			s.td, s.impl.name, keyIDs(got), peer.td, peer.td, keyIDs(want))
	}
	// SPIRE v1.13.3 lists a fetched bundle with sequence 0 (the
	// upstream-both run shows it of itself), so only ours is held to the
	// endpoint's number.
	gs, _ := got.SequenceNumber()
	ws, _ := want.SequenceNumber()
	if s.impl.name == ours.name && gs != ws {
		t.Errorf("%s stored %s's bundle with sequence %d, %s's is %d", s.td, peer.td, gs, peer.td, ws)
	}
	if h, ok := got.RefreshHint(); !ok || h != fedRefreshHint {
		t.Errorf("%s stored %s's bundle with refresh hint %v (set %v), want the endpoint's %v", s.td, peer.td, h, ok, fedRefreshHint)
	}
}

func jwtEqual(a, b *spiffebundle.Bundle) bool {
	ka, kb := a.JWTAuthorities(), b.JWTAuthorities()
	if len(ka) != len(kb) {
		return false
	}
	for id, k := range ka {
		o, ok := kb[id]
		if !ok {
			return false
		}
		if eq, ok := k.(interface{ Equal(x crypto.PublicKey) bool }); !ok || !eq.Equal(o) {
			return false
		}
	}
	return true
}

func keyIDs(b *spiffebundle.Bundle) []string {
	var ids []string
	for id := range b.JWTAuthorities() {
		ids = append(ids, id)
	}
	return ids
}

// checkRelationshipLists checks `federation list` on both servers with
// upstream's CLI (which reads the trustdomain/v1 API): a relationship made
// with the CLI is listed with SPIRE's layout, one from federates_with is
// not (SPIRE keeps those out of the datastore). On our server, our CLI
// must print the same as upstream's.
func checkRelationshipLists(t *testing.T, a, b *fedSide, profile string) {
	t.Helper()
	for _, pair := range [][2]*fedSide{{a, b}, {b, a}} {
		s, peer := pair[0], pair[1]
		want := "Found 0 federation relationships\n"
		if s.cliRoute {
			want = fmt.Sprintf("Found 1 federation relationship\n\nTrust domain              : %s\nBundle endpoint URL       : %s\nBundle endpoint profile   : %s\n",
				peer.td, peer.endpointURL(), profile)
			if profile == "https_spiffe" {
				want += fmt.Sprintf("Endpoint SPIFFE ID        : %s\n", peer.endpointSPIFFEID())
			}
		}
		if got := s.cli(t, upstream, "federation", "list"); got != want {
			t.Errorf("upstream `federation list` against %s (%s):\n%s\nwant:\n%s", s.td, s.impl.name, got, want)
		}
		if s.impl.name == ours.name {
			if got := s.cli(t, ours, "federation", "list"); got != want {
				t.Errorf("our `federation list` against %s:\n%s\nwant:\n%s", s.td, got, want)
			}
		}
	}
}

// federatedWorkload registers s's workload (this test process, by uid)
// federating with peer, starts s's agent and returns what the workload gets
// once peer's bundle is among its bundles, checked against peer's own.
func federatedWorkload(t *testing.T, s, peer *fedSide) *workloadapi.X509Context {
	t.Helper()
	node := s.tdID() + "/node"
	tok := s.token(t, s.impl, node)
	s.cli(t, s.impl, "entry", "create", "-parentID", node, "-spiffeID", s.workloadID().String(),
		"-selector", uidSelector, "-federatesWith", peer.tdID())
	ag := startAgent(t, s.impl, s.server, tok)
	c, err := workloadapi.New(context.Background(), workloadapi.WithAddr(ag.addr()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var got *workloadapi.X509Context
	eventually(t, 60*time.Second, fmt.Sprintf("%s's workload with %s's bundle", s.td, peer.td), func() error {
		x := fetchX509(t, c, s.workloadID().String())
		if _, ok := x.Bundles.Get(peer.spiffeTD()); !ok {
			return fmt.Errorf("bundles for %v only", x.Bundles.Bundles())
		}
		got = x
		return nil
	})
	fb, _ := got.Bundles.Get(peer.spiffeTD())
	if want := pemCerts(t, peer.cli(t, peer.impl, "bundle", "show")); !sameCerts(fb.X509Authorities(), want) {
		t.Errorf("%s's agent (%s) serves a %s bundle other than %s's own", s.td, s.impl.name, peer.td, peer.td)
	}
	return got
}

// handshake runs one mTLS connection with srv's workload listening and
// cli's dialling, each authorizing exactly the other's SPIFFE ID, and
// checks a line goes both ways.
func handshake(t *testing.T, srv *fedSide, xs *workloadapi.X509Context, cli *fedSide, xc *workloadapi.X509Context) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0",
		tlsconfig.MTLSServerConfig(xs.DefaultSVID(), xs.Bundles, tlsconfig.AuthorizeID(cli.workloadID())))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type accepted struct {
		peer spiffeid.ID
		err  error
	}
	done := make(chan accepted, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- accepted{err: err}
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		tc := conn.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			done <- accepted{err: err}
			return
		}
		id, err := x509svid.IDFromCert(tc.ConnectionState().PeerCertificates[0])
		if err == nil {
			var line string
			if line, err = bufio.NewReader(tc).ReadString('\n'); err == nil {
				_, err = fmt.Fprintf(tc, "%s heard %s", srv.td, line)
			}
		}
		done <- accepted{peer: id, err: err}
	}()

	d := &net.Dialer{Timeout: 20 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", ln.Addr().String(),
		tlsconfig.MTLSClientConfig(xc.DefaultSVID(), xc.Bundles, tlsconfig.AuthorizeID(srv.workloadID())))
	if err != nil {
		t.Fatalf("%s's workload dialling %s's: %v", cli.td, srv.td, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := fmt.Fprintf(conn, "hello from %s\n", cli.td); err != nil {
		t.Fatal(err)
	}
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("reading %s's reply: %v", srv.td, err)
	}
	if want := fmt.Sprintf("%s heard hello from %s\n", srv.td, cli.td); reply != want {
		t.Errorf("reply %q, want %q", reply, want)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("%s's workload accepting %s's: %v", srv.td, cli.td, r.err)
	}
	if r.peer != cli.workloadID() {
		t.Errorf("%s's workload saw peer %s, want %s", srv.td, r.peer, cli.workloadID())
	}
	serverID, err := x509svid.IDFromCert(conn.ConnectionState().PeerCertificates[0])
	if err != nil || serverID != srv.workloadID() {
		t.Errorf("%s's workload saw server %v (%v), want %s", cli.td, serverID, err, srv.workloadID())
	}
}

// testCA is a throwaway Web PKI root for https_web bundle endpoints.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// newTestCA makes a root and writes it, PEM, to path.
func newTestCA(t *testing.T, path string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "interop federation test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, path, "CERTIFICATE", der)
	return &testCA{cert: cert, key: key}
}

// issueServing writes a serving certificate for 127.0.0.1 and its key.
func (ca *testCA) issueServing(t *testing.T, certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, certPath, "CERTIFICATE", der)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, keyPath, "PRIVATE KEY", kder)
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
