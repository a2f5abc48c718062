package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	wltest "github.com/spiffe-hw/spire-hw/agent/workloadapi/workloadapitest"
)

// sdsFetchEnv makes the test binary one FetchSecrets call on the socket it
// names, for the comma-separated names of sdsNamesEnv; it prints "OK" and
// the names of the secrets it got, or "ERR" with the status code and
// message. It runs from init, before TestMain builds the binaries.
const (
	sdsFetchEnv = "E2E_SDS_FETCH_SOCKET"
	sdsNamesEnv = "E2E_SDS_FETCH_NAMES"
)

const secretTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

func init() {
	sock := os.Getenv(sdsFetchEnv)
	if sock == "" {
		return
	}
	var names []string
	if v := os.Getenv(sdsNamesEnv); v != "" {
		names = strings.Split(v, ",")
	}
	fmt.Println(sdsFetchOnce(sock, names))
	os.Exit(0)
}

func sdsFetchOnce(sock string, names []string) string {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "ERR dial " + err.Error()
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := secretv3.NewSecretDiscoveryServiceClient(conn).FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: secretTypeURL, ResourceNames: names})
	if err != nil {
		st := status.Convert(err)
		return fmt.Sprintf("ERR %s %s", st.Code(), st.Message())
	}
	var got []string
	for _, r := range resp.Resources {
		s := &tlsv3.Secret{}
		if err := r.UnmarshalTo(s); err != nil {
			return "ERR unmarshal " + err.Error()
		}
		got = append(got, s.Name)
	}
	return "OK " + strings.Join(got, ",")
}

// sdsClient is what an Envoy does on the agent's socket: SDS with no
// Workload API security header.
func sdsClient(t *testing.T, a *agentEnv) secretv3.SecretDiscoveryServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(a.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return secretv3.NewSecretDiscoveryServiceClient(conn)
}

func envoyNode(minor uint32, meta map[string]*structpb.Value) *corev3.Node {
	n := &corev3.Node{Id: "envoy-e2e", UserAgentName: "envoy", UserAgentVersionType: &corev3.Node_UserAgentBuildVersion{
		UserAgentBuildVersion: &corev3.BuildVersion{Version: &typev3.SemanticVersion{MajorNumber: 1, MinorNumber: minor}},
	}}
	if meta != nil {
		n.Metadata = &structpb.Struct{Fields: meta}
	}
	return n
}

func sdsSecrets(t *testing.T, resp *discoveryv3.DiscoveryResponse) []*tlsv3.Secret {
	t.Helper()
	var out []*tlsv3.Secret
	for _, r := range resp.Resources {
		s := &tlsv3.Secret{}
		if err := r.UnmarshalTo(s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// fetchSecret retries FetchSecrets for one name until it is served (the
// first sync may still be in flight) and returns that secret.
func fetchSecret(t *testing.T, c secretv3.SecretDiscoveryServiceClient, node *corev3.Node, name string, ok func(*tlsv3.Secret) error) *tlsv3.Secret {
	t.Helper()
	var got *tlsv3.Secret
	eventually(t, 20*time.Second, "secret "+name, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := c.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: secretTypeURL, ResourceNames: []string{name}, Node: node})
		if err != nil {
			return err
		}
		if resp.TypeUrl != secretTypeURL || resp.VersionInfo != "" || resp.Nonce != "" {
			t.Fatalf("FetchSecrets answered type %q version %q nonce %q", resp.TypeUrl, resp.VersionInfo, resp.Nonce)
		}
		s := sdsSecrets(t, resp)
		if len(s) != 1 || s[0].Name != name {
			return fmt.Errorf("got %d secrets", len(s))
		}
		if ok != nil {
			if err := ok(s[0]); err != nil {
				return err
			}
		}
		got = s[0]
		return nil
	})
	return got
}

func pemCerts(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for len(b) > 0 {
		var block *pem.Block
		if block, b = pem.Decode(b); block == nil || block.Type != "CERTIFICATE" {
			t.Fatalf("not PEM certificates: %q", b)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// tlsSVID parses a TLS certificate secret: its chain must be an X.509-SVID
// with the given ID and its PKCS#8 key must be the leaf's.
func tlsSVID(t *testing.T, s *tlsv3.Secret, want string) *x509svid.SVID {
	t.Helper()
	tc := s.GetTlsCertificate()
	if tc == nil {
		t.Fatalf("secret %q is not a TLS certificate", s.Name)
	}
	svid, err := x509svid.Parse(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatalf("secret %q: chain and key do not make an SVID (or do not match): %v", s.Name, err)
	}
	if block, _ := pem.Decode(tc.GetPrivateKey().GetInlineBytes()); block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("secret %q: key is not PKCS#8 PEM", s.Name)
	}
	if svid.ID.String() != want {
		t.Fatalf("secret %q holds %s, want %s", s.Name, svid.ID, want)
	}
	return svid
}

// spiffeTrustDomains reads a SPIFFE validator validation context: trust
// domain names in order and their authorities.
func spiffeTrustDomains(t *testing.T, s *tlsv3.Secret) ([]string, map[string][]*x509.Certificate) {
	t.Helper()
	cv := s.GetValidationContext().GetCustomValidatorConfig()
	if cv.GetName() != "envoy.tls.cert_validator.spiffe" || s.GetValidationContext().GetTrustedCa() != nil {
		t.Fatalf("secret %q has no SPIFFE validator: %v", s.Name, s)
	}
	cfg := &tlsv3.SPIFFECertValidatorConfig{}
	if err := cv.GetTypedConfig().UnmarshalTo(cfg); err != nil {
		t.Fatal(err)
	}
	var order []string
	tds := map[string][]*x509.Certificate{}
	for _, td := range cfg.TrustDomains {
		order = append(order, td.Name)
		tds[td.Name] = pemCerts(t, td.GetTrustBundle().GetInlineBytes())
	}
	return order, tds
}

func sameCerts(a, b []*x509.Certificate) bool {
	return len(a) == len(b) && !slices.ContainsFunc(a, func(c *x509.Certificate) bool {
		return !slices.ContainsFunc(b, c.Equal)
	})
}

// TestEnvoySDS drives the real agent's SDS service as an Envoy does (the
// go-control-plane types over the Workload API socket, no security
// header): the default TLS certificate, the ROOTCA, trust-domain and ALL
// validation contexts (SPIFFE validator, or trusted CAs for an old Envoy),
// rotation pushed on an open stream, a NACK that is not answered with the
// same version, a caller without an entry, and an agent with its own sds
// block.
func TestEnvoySDS(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	other := wltest.NewCA(t, spiffeid.RequireTrustDomainFromString("other.test"))
	otherPEM := filepath.Join(s.dir, "other.pem")
	if err := os.WriteFile(otherPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.Cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	s.cli(t, "bundle", "set", "-id", "spiffe://other.test", "-path", otherPEM)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The entry is this test binary's (uid and path): a copy of it
	// elsewhere is a caller of the same uid with no entry.
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", "spiffe://example.org/envoy",
		"-selector", uidSelector, "-selector", "unix:path:"+exe, "-federatesWith", "spiffe://other.test", "-x509SVIDTTL", "20")
	a := startAgent(t, s, s.token(t, "spiffe://example.org/node"))
	c := sdsClient(t, a)
	serverCAs := pemCerts(t, []byte(s.cli(t, "bundle", "show")))

	// The default TLS certificate: chain and key parse, the key is the
	// leaf's, and the chain verifies against ROOTCA.
	def := tlsSVID(t, fetchSecret(t, c, envoyNode(30, nil), "default", nil), "spiffe://example.org/envoy")
	rootCA := fetchSecret(t, c, envoyNode(30, nil), "ROOTCA", nil)
	order, tds := spiffeTrustDomains(t, rootCA)
	if !slices.Equal(order, []string{"example.org"}) || !sameCerts(tds["example.org"], serverCAs) {
		t.Fatalf("ROOTCA: trust domains %v, authorities the server's: %v", order, sameCerts(tds["example.org"], serverCAs))
	}
	if _, _, err := x509svid.Verify(def.Certificates, x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("example.org"), tds["example.org"])); err != nil {
		t.Fatalf("default SVID does not verify against ROOTCA: %v", err)
	}
	byID := fetchSecret(t, c, nil, "spiffe://example.org", nil)
	if order, tds := spiffeTrustDomains(t, byID); len(order) != 1 || !sameCerts(tds["example.org"], serverCAs) {
		t.Fatalf("spiffe://example.org: %v", order)
	}
	// An Envoy 1.17 has no SPIFFE validator: trusted CAs.
	old := fetchSecret(t, c, envoyNode(17, nil), "spiffe://example.org", nil)
	if got := pemCerts(t, old.GetValidationContext().GetTrustedCa().GetInlineBytes()); !sameCerts(got, serverCAs) {
		t.Fatalf("trusted CAs for Envoy 1.17: %d certificates, not the server's", len(got))
	}
	// ALL: every trust domain the entry federates with, by name, once
	// the federated bundle has reached the agent.
	fetchSecret(t, c, envoyNode(30, nil), "ALL", func(s *tlsv3.Secret) error {
		order, tds := spiffeTrustDomains(t, s)
		if !slices.Equal(order, []string{"example.org", "other.test"}) {
			return fmt.Errorf("trust domains %v", order)
		}
		if !sameCerts(tds["example.org"], serverCAs) || !sameCerts(tds["other.test"], []*x509.Certificate{other.Cert}) {
			return fmt.Errorf("authorities are not the trust domains' own")
		}
		return nil
	})

	t.Run("rotation on a stream, NACK", func(t *testing.T) { sdsStream(t, a, c) })
	t.Run("caller without entry", func(t *testing.T) { sdsNoEntry(t, a) })
	t.Run("sds block", func(t *testing.T) { sdsConfigured(t, s) })
}

// sdsStream opens a stream for "default", waits for a rotation to be
// pushed, NACKs it and checks the next response is a newer version.
func sdsStream(t *testing.T, a *agentEnv, c secretv3.SecretDiscoveryServiceClient) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	stream, err := c.StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := envoyNode(30, nil)
	if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: secretTypeURL, ResourceNames: []string{"default"}, Node: node}); err != nil {
		t.Fatal(err)
	}
	recv := func() (*discoveryv3.DiscoveryResponse, *x509svid.SVID) {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		if resp.TypeUrl != secretTypeURL || resp.Nonce == "" || resp.VersionInfo == "" {
			t.Fatalf("streamed response type %q version %q nonce %q", resp.TypeUrl, resp.VersionInfo, resp.Nonce)
		}
		return resp, tlsSVID(t, sdsSecrets(t, resp)[0], "spiffe://example.org/envoy")
	}
	answer := func(resp *discoveryv3.DiscoveryResponse, version string, detail *rpcstatus.Status) {
		t.Helper()
		if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: secretTypeURL, ResourceNames: []string{"default"},
			VersionInfo: version, ResponseNonce: resp.Nonce, ErrorDetail: detail}); err != nil {
			t.Fatal(err)
		}
	}
	version := func(resp *discoveryv3.DiscoveryResponse) int {
		v, err := strconv.Atoi(resp.VersionInfo)
		if err != nil {
			t.Fatalf("version %q", resp.VersionInfo)
		}
		return v
	}
	r1, first := recv()
	answer(r1, r1.VersionInfo, nil)
	// Other changes (the federated bundle) may come first; each is ACKed.
	var r2 *discoveryv3.DiscoveryResponse
	var rotated *x509svid.SVID
	for r2 == nil {
		resp, svid := recv()
		if svid.Certificates[0].SerialNumber.Cmp(first.Certificates[0].SerialNumber) != 0 {
			r2, rotated = resp, svid
			break
		}
		answer(resp, resp.VersionInfo, nil)
	}
	if version(r2) <= version(r1) {
		t.Fatalf("rotation pushed as version %s after %s", r2.VersionInfo, r1.VersionInfo)
	}
	// The Envoy cannot apply it: a NACK keeps the last good version.
	answer(r2, r1.VersionInfo, &rpcstatus.Status{Message: "e2e: refusing this certificate"})
	r3, next := recv()
	if version(r3) <= version(r2) || next.Certificates[0].SerialNumber.Cmp(rotated.Certificates[0].SerialNumber) == 0 {
		t.Fatalf("after the NACK of version %s: version %s with the same SVID was sent again", r2.VersionInfo, r3.VersionInfo)
	}
	eventually(t, 5*time.Second, "the agent logging the NACK", func() error {
		out := a.proc.out.String()
		if !strings.Contains(out, `msg="Envoy reported errors applying secrets"`) || !strings.Contains(out, `error="e2e: refusing this certificate"`) ||
			!strings.Contains(out, `msg="Client rejected expected version and rolled back"`) {
			return errString("not logged")
		}
		return nil
	})
}

// sdsNoEntry runs a copy of this binary (same uid, other path): as in
// SPIRE, it gets the trust bundle and no SVID.
func sdsNoEntry(t *testing.T, a *agentEnv) {
	exe := wltest.CopyForOthers(t, t.TempDir())
	run := func(names string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), sdsFetchEnv+"="+a.socket, sdsNamesEnv+"="+names)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", exe, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := run(""); got != "OK spiffe://example.org" {
		t.Fatalf("everything, without an entry: %q", got)
	}
	if got := run("ROOTCA"); got != "OK ROOTCA" {
		t.Fatalf("ROOTCA, without an entry: %q", got)
	}
	if got, want := run("default"), `ERR InvalidArgument workload is not authorized for the requested identities ["default"]`; got != want {
		t.Fatalf("default, without an entry: %q, want %q", got, want)
	}
}

// sdsConfigured runs a second agent with its own sds block.
func sdsConfigured(t *testing.T, s *serverEnv) {
	s.createEntry(t, "-parentID", "spiffe://example.org/node2", "-spiffeID", "spiffe://example.org/envoy2", "-selector", uidSelector)
	a := newAgent(t, s, agentConfig{nodeAttestor: joinTokenAttestor, workloadAttestor: unixAttestor(`
            discover_workload_path = true
        `)})
	conf, err := os.ReadFile(a.conf)
	if err != nil {
		t.Fatal(err)
	}
	withSDS := strings.Replace(string(conf), "agent {\n", `agent {
    sds {
        default_svid_name = "envoy-cert"
        default_bundle_name = "trust"
        default_all_bundles_name = "everything"
        disable_spiffe_cert_validation = true
    }
`, 1)
	if err := os.WriteFile(a.conf, []byte(withSDS), 0o644); err != nil {
		t.Fatal(err)
	}
	a.start(t, s.token(t, "spiffe://example.org/node2"))
	if strings.Contains(a.proc.out.String(), "agent.sds") {
		t.Fatalf("the sds block was warned about:\n%s", a.proc.out.String())
	}
	c := sdsClient(t, a)
	tlsSVID(t, fetchSecret(t, c, envoyNode(30, nil), "envoy-cert", nil), "spiffe://example.org/envoy2")
	// Disabled: trusted CAs, even for a recent Envoy.
	trust := fetchSecret(t, c, envoyNode(30, nil), "trust", nil)
	if trust.GetValidationContext().GetTrustedCa() == nil {
		t.Fatalf("trust is not a trusted-CA context: %v", trust)
	}
	// An Envoy that opts back in through its node metadata gets the
	// SPIFFE validator, and so can ask for every trust domain.
	optIn := envoyNode(30, map[string]*structpb.Value{"disable_spiffe_cert_validation": structpb.NewBoolValue(false)})
	if order, _ := spiffeTrustDomains(t, fetchSecret(t, c, optIn, "everything", nil)); !slices.Equal(order, []string{"example.org"}) {
		t.Fatalf("everything: %v", order)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: secretTypeURL, ResourceNames: []string{"default"}})
	if st := status.Convert(err); st.Message() != `workload is not authorized for the requested identities ["default"]` {
		t.Fatalf("default with default_svid_name set: %v", err)
	}
}
