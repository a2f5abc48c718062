package e2e

import (
	"context"
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

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/spiffe-hw/spire-hw/internal/childproc"
	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
)

// fedServerConf is a server block's federation block: our bundle endpoint
// on endpointPort with profile, federating with peer over peerProfile.
func fedServerConf(endpointPort int, profile, peer string, peerPort int, peerProfile string) string {
	return fmt.Sprintf(`federation {
        bundle_endpoint {
            address = "127.0.0.1"
            port = %d
            refresh_hint = "1m"
            %s
        }
        federates_with %q {
            bundle_endpoint_url = "https://127.0.0.1:%d/"
            %s
        }
    }`, endpointPort, profile, peer, peerPort, peerProfile)
}

func spiffeProfileOf(td string) string {
	return fmt.Sprintf(`bundle_endpoint_profile "https_spiffe" {
                endpoint_spiffe_id = "spiffe://%s/spire/server"
            }`, td)
}

// bootstrap gives to's server from's X.509 authorities only, as an
// operator does with "bundle show" and "bundle set": the JWT authorities
// can then only arrive through the bundle endpoint.
func bootstrap(t *testing.T, from *serverEnv, fromTD string, to *serverEnv) {
	t.Helper()
	path := filepath.Join(to.dir, fromTD+".pem")
	if err := os.WriteFile(path, []byte(from.cli(t, "bundle", "show")), 0o644); err != nil {
		t.Fatal(err)
	}
	to.cli(t, "bundle", "set", "-id", "spiffe://"+fromTD, "-path", path)
}

// fedAgent runs a join-token agent of trust domain td (newAgent writes
// example.org's) with the unix attestor, and an entry for this test
// process federating with peer.
func fedAgent(t *testing.T, s *serverEnv, td, peer string) *agentEnv {
	t.Helper()
	a := newAgent(t, s, agentConfig{nodeAttestor: joinTokenAttestor, workloadAttestor: unixAttestor("")})
	conf, err := os.ReadFile(a.conf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a.conf, []byte(strings.Replace(string(conf), `trust_domain = "example.org"`, fmt.Sprintf("trust_domain = %q", td), 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	node := "spiffe://" + td + "/node"
	s.createEntry(t, "-parentID", node, "-spiffeID", "spiffe://"+td+"/workload", "-selector", uidSelector, "-federatesWith", "spiffe://"+peer)
	a.start(t, s.token(t, node))
	return a
}

// waitForFederatedBundle waits until the workload of a holds peer's bundle
// with JWT authorities (so fetched from peer's endpoint, not the
// bootstrap) and returns its source.
func waitForFederatedBundle(t *testing.T, a *agentEnv, peer string, wantX509 []*x509.Certificate) *workloadapi.X509Source {
	t.Helper()
	c := newClient(t, a)
	peerTD := spiffeid.RequireTrustDomainFromString(peer)
	eventually(t, 60*time.Second, "the bundle of "+peer+" fetched from its endpoint", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		jb, err := c.FetchJWTBundles(ctx)
		if err != nil {
			return err
		}
		if b, err := jb.GetJWTBundleForTrustDomain(peerTD); err != nil || len(b.JWTAuthorities()) == 0 {
			return errString("no JWT authorities of " + peer + " yet")
		}
		xb, err := c.FetchX509Bundles(ctx)
		if err != nil {
			return err
		}
		b, err := xb.GetX509BundleForTrustDomain(peerTD)
		if err != nil {
			return err
		}
		for _, want := range wantX509 {
			if !b.HasX509Authority(want) {
				return errString("X.509 bundle of " + peer + " lacks its authority " + want.Subject.String())
			}
		}
		return nil
	})
	src, err := workloadapi.NewX509Source(context.Background(), workloadapi.WithClientOptions(workloadapi.WithAddr(a.addr())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func pemCertsOf(t *testing.T, s string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	rest := []byte(s)
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return out
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

// crossDomainHandshake runs a go-spiffe mTLS handshake between server's
// workload (serverID) and client's (clientID), each verifying the other
// with the federated bundle its agent gave it.
func crossDomainHandshake(t *testing.T, server *workloadapi.X509Source, serverID string, client *workloadapi.X509Source, clientID string) {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.MTLSServerConfig(server, server, tlsconfig.AuthorizeID(spiffeid.RequireFromString(clientID))))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	served := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		served <- c.(*tls.Conn).Handshake()
	}()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", l.Addr().String(),
		tlsconfig.MTLSClientConfig(client, client, tlsconfig.AuthorizeID(spiffeid.RequireFromString(serverID))))
	if err != nil {
		t.Fatalf("%s -> %s handshake: %v", clientID, serverID, err)
	}
	defer conn.Close()
	if err := <-served; err != nil {
		t.Fatalf("%s accepting %s: %v", serverID, clientID, err)
	}
	peer, err := spiffeid.FromURI(conn.ConnectionState().PeerCertificates[0].URIs[0])
	if err != nil || peer.String() != serverID {
		t.Fatalf("peer %v, %v; want %s", peer, err, serverID)
	}
}

// TestFederationHTTPSSPIFFE: two of our servers, a.org and b.org, serve
// their bundles over https_spiffe and federate with each other through
// federates_with, bootstrapped with each other's X.509 authorities only.
// Each refresher fetches the other's bundle on its own; each agent hands
// it to a workload whose entry federates with the other domain; and the
// two workloads complete a go-spiffe mTLS handshake across the domains.
func TestFederationHTTPSSPIFFE(t *testing.T) {
	t.Parallel()
	portA, portB := freePort(t), freePort(t)
	a := fedCLIServer(t, "a.org", fedServerConf(portA, `profile "https_spiffe" {}`, "b.org", portB, spiffeProfileOf("b.org")))
	b := fedCLIServer(t, "b.org", fedServerConf(portB, `profile "https_spiffe" {}`, "a.org", portA, spiffeProfileOf("a.org")))
	bootstrap(t, b, "b.org", a)
	bootstrap(t, a, "a.org", b)
	agentA := fedAgent(t, a, "a.org", "b.org")
	agentB := fedAgent(t, b, "b.org", "a.org")

	srcA := waitForFederatedBundle(t, agentA, "b.org", pemCertsOf(t, b.cli(t, "bundle", "show")))
	srcB := waitForFederatedBundle(t, agentB, "a.org", pemCertsOf(t, a.cli(t, "bundle", "show")))
	crossDomainHandshake(t, srcB, "spiffe://b.org/workload", srcA, "spiffe://a.org/workload")
	crossDomainHandshake(t, srcA, "spiffe://a.org/workload", srcB, "spiffe://b.org/workload")

	// The endpoint presents the server's SVID, which Web PKI verification
	// does not accept: a foreign server needs a.org's bundle to trust it.
	if _, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", portA), &tls.Config{MinVersion: tls.VersionTLS12}); err == nil {
		t.Fatal("a.org's endpoint passed Web PKI verification with an SVID")
	}
}

// webCA is a test Web PKI: a root and a serving certificate for 127.0.0.1
// in files.
func webCA(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey, leafKey := newKey(), newKey()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e web CA"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, leafKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile, certFile, keyFile = filepath.Join(dir, "web-ca.pem"), filepath.Join(dir, "web.pem"), filepath.Join(dir, "web.key")
	for path, block := range map[string]*pem.Block{
		caFile:   {Type: "CERTIFICATE", Bytes: caDER},
		certFile: {Type: "CERTIFICATE", Bytes: leafDER},
		keyFile:  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}

// restartWithRoots restarts s's server process with SSL_CERT_FILE naming
// roots, the way an operator adds a private CA to a server's Web PKI
// roots; start inherits the test's environment, which parallel tests
// share, so the variable is given through env(1).
func restartWithRoots(t *testing.T, s *serverEnv, roots string) {
	t.Helper()
	s.proc.Stop()
	out := &syncbuf.Buffer{}
	cp, err := childproc.Start(s.dir, out, nil, "/usr/bin/env", "SSL_CERT_FILE="+roots, bin("spire-server"), "run", "-config", s.conf)
	if err != nil {
		t.Fatal(err)
	}
	s.proc = &proc{Proc: cp, out: out}
	t.Cleanup(func() {
		s.proc.Stop()
		if t.Failed() {
			t.Logf("--- spire-server (SSL_CERT_FILE) output:\n%s", out.String())
		}
	})
	eventually(t, 20*time.Second, "server healthcheck", func() error {
		if done, code := s.proc.exited(); done {
			t.Fatalf("server exited with %d", code)
		}
		if r := cli(t, s.dir, "spire-server", "healthcheck", "-socketPath", s.socket); r.code != 0 {
			return errString(r.stdout + r.stderr)
		}
		return nil
	})
}

// TestFederationHTTPSWeb: c.org serves its bundle over https_web with a
// serving_cert_file from a test CA, which a.org trusts as a Web PKI root;
// a.org federates with c.org over https_web (no bootstrap bundle needed)
// and c.org with a.org over https_spiffe; workloads of both domains get
// each other's bundle and complete an mTLS handshake.
func TestFederationHTTPSWeb(t *testing.T) {
	t.Parallel()
	portA, portC := freePort(t), freePort(t)
	dir := shortTempDir(t)
	caFile, certFile, keyFile := webCA(t, dir)
	webProfile := fmt.Sprintf(`profile "https_web" {
                serving_cert_file {
                    cert_file_path = %q
                    key_file_path = %q
                    file_sync_interval = "1m"
                }
            }`, certFile, keyFile)
	a := fedCLIServer(t, "a.org", fedServerConf(portA, `profile "https_spiffe" {}`, "c.org", portC, `bundle_endpoint_profile "https_web" {}`))
	restartWithRoots(t, a, caFile)
	c := fedCLIServer(t, "c.org", fedServerConf(portC, webProfile, "a.org", portA, spiffeProfileOf("a.org")))
	bootstrap(t, a, "a.org", c)
	if out := a.cli(t, "federation", "refresh", "-id", "c.org"); out != "Bundle refreshed\n" {
		t.Fatalf("refresh of c.org over https_web: %q", out)
	}
	agentA := fedAgent(t, a, "a.org", "c.org")
	agentC := fedAgent(t, c, "c.org", "a.org")
	srcA := waitForFederatedBundle(t, agentA, "c.org", pemCertsOf(t, c.cli(t, "bundle", "show")))
	srcC := waitForFederatedBundle(t, agentC, "a.org", pemCertsOf(t, a.cli(t, "bundle", "show")))
	crossDomainHandshake(t, srcC, "spiffe://c.org/workload", srcA, "spiffe://a.org/workload")

	// A client that trusts the test CA sees c.org's serving certificate,
	// not an SVID.
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(mustRead(t, caFile))
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", portC), &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("c.org's https_web endpoint: %v", err)
	}
	conn.Close()
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
