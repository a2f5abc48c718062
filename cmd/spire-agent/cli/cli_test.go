package cli

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/agent/workloadapi"
	wltest "github.com/spiffe-hw/spire-hw/agent/workloadapi/workloadapitest"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/unix"
	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

type agent struct {
	ca     *wltest.CA
	mgr    *wltest.Manager
	socket string
}

func startAgent(t *testing.T) *agent {
	t.Helper()
	ca := wltest.NewCA(t, td)
	mgr := wltest.NewManager(t, ca)
	h := workloadapi.New(workloadapi.Config{
		Manager:     mgr,
		Attestors:   []workloadapi.Attestor{unix.New(unix.Config{})},
		TrustDomain: td,
	})
	dir, err := os.MkdirTemp("", "cli")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "public", "api.sock")
	l, err := workloadapi.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	s, err := workloadapi.NewServer(h)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return &agent{ca: ca, mgr: mgr, socket: sock}
}

func (a *agent) register(t *testing.T, path string) {
	a.mgr.Set(a.ca.Issue(t, path), &types.Selector{Type: "unix", Value: "uid:" + strconv.Itoa(os.Geteuid())})
}

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(args, func([]string) int { return 42 }, &out, &errb)
	return code, out.String(), errb.String()
}

func TestFetchX509Write(t *testing.T) {
	a := startAgent(t)
	a.register(t, "/cli")
	dir := t.TempDir()
	code, out, errs := runCLI(t, "api", "fetch", "x509", "-socketPath", a.socket, "-write", dir)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	re := regexp.MustCompile(`^Received 1 svid after [^\n]+\n\nSPIFFE ID:\t\tspiffe://example.org/cli\nSVID Valid After:\t[^\n]+\nSVID Valid Until:\t[^\n]+\nCA #1 Valid After:\t[^\n]+\nCA #1 Valid Until:\t[^\n]+\n\nWriting SVID #0 to file ` + regexp.QuoteMeta(dir) + `/svid.0.pem.\nWriting key #0 to file [^\n]+/svid.0.key.\nWriting bundle #0 to file [^\n]+/bundle.0.pem.\n$`)
	if !re.MatchString(out) {
		t.Fatalf("output not in SPIRE's format:\n%s", out)
	}

	certs := readPEM(t, filepath.Join(dir, "svid.0.pem"), "CERTIFICATE")
	roots := readPEM(t, filepath.Join(dir, "bundle.0.pem"), "CERTIFICATE")
	keyDER := readPEM(t, filepath.Join(dir, "svid.0.key"), "PRIVATE KEY")
	var chain, bundle []*x509.Certificate
	for _, d := range certs {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	for _, d := range roots {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			t.Fatal(err)
		}
		bundle = append(bundle, c)
	}
	id, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, bundle))
	if err != nil || id.Path() != "/cli" {
		t.Fatalf("written SVID does not verify: %v (%v)", err, id)
	}
	if _, err := x509.ParsePKCS8PrivateKey(keyDER[0]); err != nil {
		t.Fatalf("written key: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, "svid.0.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}

	// "api fetch" is "api fetch x509"; json output parses.
	code, out, errs = runCLI(t, "api", "fetch", "-socketPath", a.socket, "-output", "json")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	var resp struct {
		Svids []struct {
			SpiffeID string `json:"spiffeId"`
		} `json:"svids"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil || len(resp.Svids) != 1 || resp.Svids[0].SpiffeID != "spiffe://example.org/cli" {
		t.Fatalf("json output %q: %v", out, err)
	}
}

func readPEM(t *testing.T, path, typ string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != typ {
			t.Fatalf("%s: PEM type %q, want %q", path, blk.Type, typ)
		}
		out = append(out, blk.Bytes)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no PEM blocks", path)
	}
	return out
}

func TestFetchAndValidateJWT(t *testing.T) {
	a := startAgent(t)
	a.register(t, "/jwt")
	code, out, errs := runCLI(t, "api", "fetch", "jwt", "-socketPath", a.socket, "-audience", "svc")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	// The bundle is printed as the agent serves it: SPIRE's indented JWKS.
	m := regexp.MustCompile(`^token\(spiffe://example.org/jwt\):\n\t(\S+)\nbundle\(spiffe://example.org\):\n\t\{\n    "keys": \[\n(?s:.+)\n\}\n$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("output not in SPIRE's format:\n%s", out)
	}
	token := m[1]

	code, out, errs = runCLI(t, "api", "validate", "jwt", "-socketPath", a.socket, "-audience", "svc", "-svid", token)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	// The claims are the agent's answer, aud as a list as SPIRE's agent
	// gives it, not the token re-parsed locally.
	if !strings.HasPrefix(out, "SVID is valid.\nSPIFFE ID : spiffe://example.org/jwt\nClaims    : {\"aud\":[\"svc\"],") {
		t.Fatalf("validate output:\n%s", out)
	}

	code, _, errs = runCLI(t, "api", "validate", "jwt", "-socketPath", a.socket, "-audience", "other", "-svid", token)
	if code == 0 || !strings.HasPrefix(errs, "SVID is not valid: ") {
		t.Fatalf("wrong audience accepted: exit %d, stderr %q", code, errs)
	}

	code, _, errs = runCLI(t, "api", "fetch", "jwt", "-socketPath", a.socket)
	if code == 0 || !strings.Contains(errs, "audience must be specified") {
		t.Fatalf("missing audience: exit %d, stderr %q", code, errs)
	}
}

func TestHealthcheck(t *testing.T) {
	a := startAgent(t)
	// No entry yet: PermissionDenied still means a healthy agent.
	code, out, errs := runCLI(t, "healthcheck", "-socketPath", a.socket)
	if code != 0 || out != "Agent is healthy.\n" {
		t.Fatalf("no entry: exit %d, out %q, err %q", code, out, errs)
	}
	a.register(t, "/h")
	code, out, _ = runCLI(t, "healthcheck", "-socketPath", a.socket, "-verbose")
	if code != 0 || out != "Contacting Workload API...\nSVID received over Workload API.\nAgent is healthy.\n" {
		t.Fatalf("verbose: exit %d, out %q", code, out)
	}
	code, out, _ = runCLI(t, "healthcheck", "-socketPath", a.socket, "-shallow")
	if code != 0 || out != "Agent is healthy.\n" {
		t.Fatalf("shallow: exit %d, out %q", code, out)
	}

	missing := filepath.Join(t.TempDir(), "nope.sock")
	code, _, errs = runCLI(t, "healthcheck", "-socketPath", missing, "-timeout", "2s")
	if code == 0 || !strings.HasPrefix(errs, "Agent is unhealthy: ") {
		t.Fatalf("missing socket: exit %d, stderr %q", code, errs)
	}
	code, _, errs = runCLI(t, "healthcheck", "-socketPath", missing, "-shallow")
	if code == 0 || !strings.HasPrefix(errs, "Agent is unhealthy: ") {
		t.Fatalf("missing socket shallow: exit %d, stderr %q", code, errs)
	}
}

func TestWatchPrintsRotation(t *testing.T) {
	a := startAgent(t)
	a.register(t, "/watched")
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncbuf.Buffer{}
	done := make(chan int, 1)
	go func() {
		done <- mainContext(ctx, []string{"api", "watch", "-socketPath", a.socket}, nil, out, &syncbuf.Buffer{})
	}()
	waitFor(t, func() bool { return strings.Count(out.String(), "SPIFFE ID:") == 1 })
	a.register(t, "/watched") // rotation: a new SVID for the same entry
	waitFor(t, func() bool { return strings.Count(out.String(), "SPIFFE ID:") == 2 })
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("watch exit %d after interrupt", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not stop")
	}
}

func TestRunAndUnknown(t *testing.T) {
	if code, _, _ := runCLI(t, "run", "-config", "x"); code != 42 {
		t.Fatalf("run not delegated: %d", code)
	}
	if code, _, errs := runCLI(t, "frobnicate"); code != 127 || !strings.Contains(errs, "Available commands are:") {
		t.Fatalf("unknown command: %d %q", code, errs)
	}
	if code, _, _ := runCLI(t, "api", "fetch", "x509", "-output", "yaml", "-socketPath", "/nonexistent"); code == 0 {
		t.Fatal("bad -output accepted")
	}
}

func waitFor(t *testing.T, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHealthcheckNotReady: an agent that says it is not ready (not
// attested, SVID expired, server away too long) is unhealthy, with
// SPIRE's message, even though its Workload API answers.
func TestHealthcheckNotReady(t *testing.T) {
	ca := wltest.NewCA(t, td)
	h := workloadapi.New(workloadapi.Config{
		Manager:     wltest.NewManager(t, ca),
		Attestors:   []workloadapi.Attestor{unix.New(unix.Config{})},
		TrustDomain: td,
		Ready:       func() error { return errors.New("agent is not attested yet") },
	})
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := workloadapi.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	s, err := workloadapi.NewServer(h)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	code, out, errs := runCLI(t, "healthcheck", "-socketPath", sock)
	if code == 0 || errs != "Agent is unhealthy: agent returned status \"NOT_SERVING\"\n" || out != "" {
		t.Fatalf("not ready: exit %d, out %q, err %q", code, out, errs)
	}
}
