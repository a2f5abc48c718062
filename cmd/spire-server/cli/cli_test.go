package cli

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"
)

func runMain(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr}
	code := mainWithEnv(args, func(a []string) int {
		stdout.WriteString("run:" + strings.Join(a, ","))
		return 7
	}, e)
	return code, stdout.String(), stderr.String()
}

func TestMainDispatch(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.sock")
	for _, tt := range []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr []string
	}{
		{name: "no args", wantCode: 127, wantStderr: []string{"Usage: spire-server [--version] [--help] <command> [<args>]\n\nAvailable commands are:\n", "    entry                \n", "    healthcheck          Determines server health status\n"}},
		{name: "help", args: []string{"--help"}, wantCode: 0, wantStderr: []string{"Available commands are:"}},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 127, wantStderr: []string{"Available commands are:"}},
		{name: "help is not a command", args: []string{"help"}, wantCode: 127, wantStderr: []string{"Available commands are:"}},
		{name: "flag before the subcommand", args: []string{"-x", "entry", "show"}, wantCode: 1, wantStderr: []string{"Invalid flags before the subcommand.", "Usage of entry show:"}},
		{name: "validate without a file", args: []string{"validate", "-config", missing}, wantCode: 1, wantStderr: []string{"SPIRE server configuration file is invalid: ", missing}},
		{name: "validate help", args: []string{"validate", "-h"}, wantCode: 0, wantStderr: []string{"Usage of validate:\n", "-expandEnv", "flag: help requested\n"}},
		{name: "run help", args: []string{"run", "-h"}, wantCode: 0, wantStderr: []string{"Usage of run:\n", "-config", "flag: help requested\n"}},
		{name: "run is delegated", args: []string{"run", "-config", "x.conf"}, wantCode: 7, wantStdout: "run:-config,x.conf"},
		{name: "group without subcommand", args: []string{"entry"}, wantCode: 1, wantStderr: []string{"This command is accessed by using one of the subcommands below.\n\nSubcommands:\n    count     Count registration entries\n    create    Creates registration entries\n"}},
		{name: "unknown subcommand", args: []string{"entry", "explode"}, wantCode: 1, wantStderr: []string{"Subcommands:"}},
		{name: "bad flag", args: []string{"entry", "create", "-bogus"}, wantCode: 1, wantStderr: []string{"flag provided but not defined: -bogus", "-spiffeID"}},
		{name: "stray argument", args: []string{"entry", "show", "spiffe://td/x"}, wantCode: 1, wantStderr: []string{`unexpected argument "spiffe://td/x"`}},
		{name: "help flag", args: []string{"agent", "list", "-h"}, wantCode: 0, wantStderr: []string{"Usage of agent list:\n", "-matchSelectorsOn", "-socketPath", "flag: help requested\n"}},
		{name: "bad output format", args: []string{"agent", "list", "-output", "yaml"}, wantCode: 1, wantStderr: []string{"bad formatter flag"}},
		{name: "missing required flag names it", args: []string{"entry", "create", "-socketPath", missing}, wantCode: 1, wantStderr: []string{"Error: at least one selector is required (set -selector"}},
		{name: "invalid selector", args: []string{"entry", "create", "-socketPath", missing, "-spiffeID", "spiffe://td/w", "-parentID", "spiffe://td/a", "-selector", "bad"}, wantCode: 1, wantStderr: []string{`Error: selector "bad" must be formatted as type:value`}},
		{name: "server unreachable", args: []string{"entry", "show", "-socketPath", missing}, wantCode: 1, wantStderr: []string{"Error: error fetching entries: rpc error: code = Unavailable"}},
		{name: "healthcheck unreachable", args: []string{"healthcheck", "-socketPath", missing}, wantCode: 1, wantStderr: []string{"Server is unhealthy: unable to determine health\n"}},
		{name: "healthcheck verbose", args: []string{"healthcheck", "-verbose", "-socketPath", missing}, wantCode: 1, wantStdout: "Checking server health...\n", wantStderr: []string{"Failed to check health: ", "Server is unhealthy: unable to determine health\n"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runMain(tt.args...)
			if code != tt.wantCode {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", code, tt.wantCode, stderr)
			}
			if stdout != tt.wantStdout {
				t.Fatalf("stdout %q, want %q", stdout, tt.wantStdout)
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr, w) {
					t.Fatalf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// TestHealthcheckAgainstHealthServer runs the command against grpc's own
// health service on a real Unix socket.
func TestHealthcheckAgainstHealthServer(t *testing.T) {
	dir, err := os.MkdirTemp("", "hc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "api.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	grpc_health_v1.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	code, stdout, stderr := runMain("healthcheck", "-socketPath", sock)
	if code != 0 || stdout != "Server is healthy.\n" || stderr != "" {
		t.Fatalf("code %d stdout %q stderr %q", code, stdout, stderr)
	}

	hs.SetServingStatus("", grpc_health_v1.HealthCheckResponse_NOT_SERVING)
	code, stdout, stderr = runMain("healthcheck", "-shallow", "-socketPath", sock)
	if code != 1 || stdout != "" || stderr != "Server is unhealthy: server returned status \"NOT_SERVING\"\n" {
		t.Fatalf("code %d stdout %q stderr %q", code, stdout, stderr)
	}

	// A relative socket path works too (a "unix://" target would otherwise
	// read it as an authority).
	wd, _ := os.Getwd()
	t.Cleanup(func() { _ = os.Chdir(wd) })
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	hs.SetServingStatus("", grpc_health_v1.HealthCheckResponse_SERVING)
	if code, _, stderr := runMain("healthcheck", "-socketPath", "api.sock"); code != 0 {
		t.Fatalf("relative socket path: code %d stderr %q", code, stderr)
	}
}

func TestTokenGenerate(t *testing.T) {
	req, err := parseCmd[*tokenGenerateCommand](t, "token generate").buildRequest()
	if err != nil {
		t.Fatal(err)
	}
	requireProtoEqual(t, &agentv1.CreateJoinTokenRequest{Ttl: 600}, req)

	req, err = parseCmd[*tokenGenerateCommand](t, "token generate", "-spiffeID", "spiffe://example.org/agent", "-ttl", "1200").buildRequest()
	if err != nil {
		t.Fatal(err)
	}
	requireProtoEqual(t, &agentv1.CreateJoinTokenRequest{Ttl: 1200, AgentId: sid("example.org", "/agent")}, req)

	_, err = parseCmd[*tokenGenerateCommand](t, "token generate", "-spiffeID", "invalid id").buildRequest()
	requireErrContains(t, err, "scheme is missing or invalid")
	_, err = parseCmd[*tokenGenerateCommand](t, "token generate", "-ttl", "0").buildRequest()
	requireErrContains(t, err, "a positive TTL is required (set -ttl)")

	e, stdout, _ := newTestEnv()
	_ = printToken(e, outputPretty, &types.JoinToken{Value: "token"}, false)
	if stdout.String() != "Token: token\n" {
		t.Fatalf("got %q", stdout.String())
	}
	e, stdout, _ = newTestEnv()
	_ = printToken(e, outputPretty, &types.JoinToken{Value: "token"}, true)
	if stdout.String() != "Token: token\nWarning: Missing SPIFFE ID.\n" {
		t.Fatalf("got %q", stdout.String())
	}
	e, stdout, _ = newTestEnv()
	_ = printToken(e, outputJSON, &types.JoinToken{Value: "token", ExpiresAt: 5}, true)
	requireJSONEq(t, `{"value":"token","expires_at":"5"}`, stdout.String())
}

// newCA returns a self-signed CA certificate for bundle tests.
func newCA(t *testing.T, cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func TestBundleFormats(t *testing.T) {
	ca1, jwtKey := newCA(t, "ca1")
	ca2, _ := newCA(t, "ca2")
	jwtDER, err := x509.MarshalPKIXPublicKey(jwtKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	b := &types.Bundle{
		TrustDomain:     "example.org",
		X509Authorities: []*types.X509Certificate{{Asn1: ca1.Raw}, {Asn1: ca2.Raw}},
		JwtAuthorities:  []*types.JWTKey{{KeyId: "kid1", PublicKey: jwtDER}},
		RefreshHint:     300,
		SequenceNumber:  4,
	}

	var pemOut bytes.Buffer
	if err := printBundleWithFormat(&pemOut, b, "pem", false); err != nil {
		t.Fatal(err)
	}
	var ders [][]byte
	for rest := pemOut.Bytes(); ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			t.Fatalf("block type %q", block.Type)
		}
		ders = append(ders, block.Bytes)
	}
	if len(ders) != 2 || !bytes.Equal(ders[0], ca1.Raw) || !bytes.Equal(ders[1], ca2.Raw) {
		t.Fatalf("PEM output does not hold the two authorities in order")
	}

	var doc bytes.Buffer
	if err := printBundleWithFormat(&doc, b, "SPIFFE", false); err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	sb, err := spiffebundle.Parse(td, doc.Bytes())
	if err != nil {
		t.Fatalf("go-spiffe rejects the bundle document: %v\n%s", err, doc.String())
	}
	if !sb.HasX509Authority(ca1) || !sb.HasX509Authority(ca2) {
		t.Fatal("X.509 authorities missing from the SPIFFE bundle")
	}
	if _, ok := sb.FindJWTAuthority("kid1"); !ok {
		t.Fatal("JWT authority missing from the SPIFFE bundle")
	}
	if r, ok := sb.RefreshHint(); !ok || r != 300*time.Second {
		t.Fatalf("refresh hint %v %v", r, ok)
	}
	if !strings.HasPrefix(doc.String(), "{\n    \"") {
		t.Fatalf("document not indented with four spaces:\n%s", doc.String())
	}

	// The document round-trips through "bundle set -format spiffe".
	back, err := parseBundleData(doc.Bytes(), "spiffe", td)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.X509Authorities) != 2 || len(back.JwtAuthorities) != 1 || back.JwtAuthorities[0].KeyId != "kid1" || back.RefreshHint != 300 || back.SequenceNumber != 4 {
		t.Fatalf("round trip lost data: %v", back)
	}

	var headed bytes.Buffer
	_ = printBundleWithFormat(&headed, b, "pem", true)
	if !strings.HasPrefix(headed.String(), "****************************************\n* example.org\n****************************************\n-----BEGIN CERTIFICATE-----\n") {
		t.Fatalf("header:\n%s", headed.String())
	}

	requireErrContains(t, printBundleWithFormat(&headed, b, "der", false), `invalid format: "der"`)
	requireErrContains(t, printBundleWithFormat(&headed, &types.Bundle{TrustDomain: "td", X509Authorities: []*types.X509Certificate{{Asn1: []byte("junk")}}}, "pem", false), "unable to parse X.509 authority 0")
}

func TestBundleSetAndDeleteRequests(t *testing.T) {
	ca, _ := newCA(t, "fed")
	pemData := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
	path := filepath.Join(t.TempDir(), "b.pem")
	if err := os.WriteFile(path, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	want := &bundlev1.BatchSetFederatedBundleRequest{Bundle: []*types.Bundle{{
		TrustDomain: "other.org", X509Authorities: []*types.X509Certificate{{Asn1: ca.Raw}},
	}}}
	req, err := parseCmd[*bundleSetCommand](t, "bundle set", "-id", "spiffe://other.org", "-path", path).buildRequest(strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	requireProtoEqual(t, want, req)
	req, err = parseCmd[*bundleSetCommand](t, "bundle set", "-id", "other.org").buildRequest(bytes.NewReader(pemData))
	if err != nil {
		t.Fatal(err)
	}
	requireProtoEqual(t, want, req)

	for _, tt := range []struct {
		name, stdin, wantErr string
		args                 []string
	}{
		{name: "no id", wantErr: "id is required (set -id)"},
		{name: "bad id", args: []string{"-id", "spiffe://Bad/x"}, wantErr: "invalid -id"},
		{name: "no certificates", args: []string{"-id", "o.org"}, stdin: "hello", wantErr: "no PEM certificates found"},
		{name: "bad format", args: []string{"-id", "o.org", "-format", "jwks"}, stdin: string(pemData), wantErr: `invalid format: "jwks"`},
		{name: "bad spiffe doc", args: []string{"-id", "o.org", "-format", "spiffe"}, stdin: "{}", wantErr: "unable to parse to spiffe bundle"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseCmd[*bundleSetCommand](t, "bundle set", tt.args...).buildRequest(strings.NewReader(tt.stdin))
			requireErrContains(t, err, tt.wantErr)
		})
	}

	for mode, want := range map[string]bundlev1.BatchDeleteFederatedBundleRequest_Mode{
		"restrict": bundlev1.BatchDeleteFederatedBundleRequest_RESTRICT, "delete": bundlev1.BatchDeleteFederatedBundleRequest_DELETE,
		"dissociate": bundlev1.BatchDeleteFederatedBundleRequest_DISSOCIATE,
	} {
		req, err := parseCmd[*bundleDeleteCommand](t, "bundle delete", "-id", "spiffe://other.org", "-mode", mode).buildRequest()
		if err != nil {
			t.Fatal(err)
		}
		requireProtoEqual(t, &bundlev1.BatchDeleteFederatedBundleRequest{TrustDomains: []string{"other.org"}, Mode: want}, req)
	}
	_, err = parseCmd[*bundleDeleteCommand](t, "bundle delete", "-id", "o.org", "-mode", "purge").buildRequest()
	requireErrContains(t, err, `unsupported mode "purge"`)
	_, err = parseCmd[*bundleDeleteCommand](t, "bundle delete").buildRequest()
	requireErrContains(t, err, "id is required")
}

func TestX509MintRequest(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cmd := parseCmd[*x509MintCommand](t, "x509 mint", "-spiffeID", "spiffe://example.org/w", "-ttl", "1500ms", "-dns", "a.test", "-dns", "b.test")
	req, err := cmd.buildRequest(key)
	if err != nil {
		t.Fatal(err)
	}
	if req.Ttl != 2 {
		t.Fatalf("ttl %d, want 2 (rounded up)", req.Ttl)
	}
	csr, err := x509.ParseCertificateRequest(req.Csr)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatal(err)
	}
	if len(csr.URIs) != 1 || csr.URIs[0].String() != "spiffe://example.org/w" {
		t.Fatalf("URIs %v", csr.URIs)
	}
	if !slices.Equal(csr.DNSNames, []string{"a.test", "b.test"}) {
		t.Fatalf("DNS names %v", csr.DNSNames)
	}
	if !key.PublicKey.Equal(csr.PublicKey) {
		t.Fatal("CSR is not for the local key")
	}

	_, err = parseCmd[*x509MintCommand](t, "x509 mint").buildRequest(key)
	requireErrContains(t, err, "spiffeID must be specified (set -spiffeID)")
	_, err = parseCmd[*x509MintCommand](t, "x509 mint", "-spiffeID", "spiffe://td/w", "-ttl", "-1s").buildRequest(key)
	requireErrContains(t, err, "a positive TTL is required")
}

func TestX509MintOutput(t *testing.T) {
	ca, _ := newCA(t, "root")
	leaf, leafKey := newCA(t, "leaf")
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	res := newX509MintResult(keyDER, &types.X509SVID{CertChain: [][]byte{leaf.Raw}}, &types.Bundle{X509Authorities: []*types.X509Certificate{{Asn1: ca.Raw}}})
	svidPEM, keyPEM, bundlePEM := res.pems()

	e, stdout, _ := newTestEnv()
	_ = printX509Mint(e, outputPretty, res)
	want := "X509-SVID:\n" + string(svidPEM) + "\nPrivate key:\n" + string(keyPEM) + "\nRoot CAs:\n" + string(bundlePEM) + "\n"
	if stdout.String() != want {
		t.Fatalf("got:\n%s", stdout.String())
	}

	e, stdout, _ = newTestEnv()
	_ = printX509Mint(e, outputJSON, res)
	requireJSONEq(t, `[{"x509_svid":["`+base64.StdEncoding.EncodeToString(leaf.Raw)+`"],"private_key":"`+base64.StdEncoding.EncodeToString(keyDER)+`","root_cas":["`+base64.StdEncoding.EncodeToString(ca.Raw)+`"]}]`, stdout.String())

	dir := t.TempDir()
	// An existing key file with loose permissions gets replaced, not reused.
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), []byte("old"), 0o666); err != nil {
		t.Fatal(err)
	}
	e, stdout, _ = newTestEnv()
	if err := writeX509Mint(e, dir, res); err != nil {
		t.Fatal(err)
	}
	wantOut := "X509-SVID written to " + filepath.Join(dir, "svid.pem") + "\nPrivate key written to " + filepath.Join(dir, "key.pem") + "\nRoot CAs written to " + filepath.Join(dir, "bundle.pem") + "\n"
	if stdout.String() != wantOut {
		t.Fatalf("got %q", stdout.String())
	}
	for name, wantMode := range map[string]os.FileMode{"svid.pem": 0o644, "key.pem": 0o600, "bundle.pem": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != wantMode {
			t.Fatalf("%s mode %v, want %v", name, fi.Mode().Perm(), wantMode)
		}
	}
	gotKey, _ := os.ReadFile(filepath.Join(dir, "key.pem"))
	block, _ := pem.Decode(gotKey)
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !leafKey.Equal(parsed) {
		t.Fatal("written key differs")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
}

func jwtWithPayload(payload string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"ES256"}`)) + "." + enc([]byte(payload)) + "." + enc([]byte("sig"))
}

func TestJWTMint(t *testing.T) {
	req, err := parseCmd[*jwtMintCommand](t, "jwt mint", "-spiffeID", "spiffe://domain.test/workload", "-audience", "A1", "-audience", "A2", "-ttl", "1m").buildRequest()
	if err != nil {
		t.Fatal(err)
	}
	requireProtoEqual(t, &svidv1.MintJWTSVIDRequest{Id: sid("domain.test", "/workload"), Audience: []string{"A1", "A2"}, Ttl: 60}, req)

	_, err = parseCmd[*jwtMintCommand](t, "jwt mint", "-audience", "a").buildRequest()
	requireErrContains(t, err, "spiffeID must be specified (set -spiffeID)")
	_, err = parseCmd[*jwtMintCommand](t, "jwt mint", "-spiffeID", "spiffe://td/w").buildRequest()
	requireErrContains(t, err, "at least one audience must be specified (set -audience)")

	exp, err := jwtExpiry(jwtWithPayload(`{"sub":"spiffe://td/w","exp":1628500000}`))
	if err != nil || exp.Unix() != 1628500000 {
		t.Fatalf("exp %v err %v", exp, err)
	}
	for _, tt := range []struct{ name, token, wantErr string }{
		{"two parts", "a.b", "three parts"},
		{"bad base64", "a.!!.c", "invalid JWT payload encoding"},
		{"not json", jwtWithPayload("nope"), "invalid JWT claims"},
		{"no exp", jwtWithPayload(`{"sub":"x"}`), "no expiry claim"},
		{"string exp", jwtWithPayload(`{"exp":"soon"}`), "invalid JWT claims"},
		{"huge exp", jwtWithPayload(`{"exp":1e300}`), "invalid expiry claim"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := jwtExpiry(tt.token)
			requireErrContains(t, err, tt.wantErr)
		})
	}

	resp := &svidv1.MintJWTSVIDResponse{Svid: &types.JWTSVID{Token: "tok", Id: sid("domain.test", "/workload"), ExpiresAt: 1628500000, IssuedAt: 1628600000}}
	e, stdout, _ := newTestEnv()
	_ = printJWTMint(e, outputPretty, resp)
	if stdout.String() != "tok\n" {
		t.Fatalf("got %q", stdout.String())
	}
	e, stdout, _ = newTestEnv()
	_ = printJWTMint(e, outputJSON, resp)
	requireJSONEq(t, `{"svid":{"token":"tok","id":{"trust_domain":"domain.test","path":"/workload"},"expires_at":"1628500000","hint":"","issued_at":"1628600000"}}`, stdout.String())
}

func TestTTLToSeconds(t *testing.T) {
	for in, want := range map[time.Duration]int32{0: 0, -time.Second: 0, time.Nanosecond: 1, time.Second: 1, 90 * time.Second: 90, 1 << 62: maxInt32} {
		if got := ttlToSeconds(in); got != want {
			t.Fatalf("ttlToSeconds(%v) = %d, want %d", in, got, want)
		}
	}
}
