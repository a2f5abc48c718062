package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

var (
	buildOIDCOnce sync.Once
	buildOIDCErr  error
)

// buildOIDC builds the discovery provider into binDir once per run; the
// shared TestMain builds only the server and the agent.
func buildOIDC(t *testing.T) {
	t.Helper()
	buildOIDCOnce.Do(func() {
		out, err := exec.Command("go", "build", "-o", bin("oidc-discovery-provider"), "../../cmd/oidc-discovery-provider").CombinedOutput()
		if err != nil {
			buildOIDCErr = fmt.Errorf("build oidc-discovery-provider: %v\n%s", err, out)
		}
	})
	if buildOIDCErr != nil {
		t.Fatal(buildOIDCErr)
	}
}

// oidcEnv is a running oidc-discovery-provider on a loopback port, serving
// http://localhost:<port> (allow_insecure_scheme).
type oidcEnv struct {
	issuer     string
	healthPort int
	proc       *proc
}

// startOIDC runs the provider with source as its key source block until
// the test ends, and waits until it serves keys.
func startOIDC(t *testing.T, port int, source string) *oidcEnv {
	t.Helper()
	o := launchOIDC(t, port, source)
	eventually(t, 20*time.Second, "provider ready", func() error {
		if done, code := o.proc.exited(); done {
			t.Fatalf("provider exited with %d", code)
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ready", o.healthPort))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("ready: %d", resp.StatusCode)
		}
		return nil
	})
	return o
}

// launchOIDC starts the provider without waiting for it.
func launchOIDC(t *testing.T, port int, source string) *oidcEnv {
	t.Helper()
	buildOIDC(t)
	dir := shortTempDir(t)
	conf := filepath.Join(dir, "oidc.conf")
	healthPort := freePort(t)
	if err := os.WriteFile(conf, fmt.Appendf(nil, `log_level = "debug"
log_requests = true
domains = ["localhost"]
insecure_addr = "127.0.0.1:%d"
allow_insecure_scheme = true
%s
health_checks { bind_port = %d }
`, port, source, healthPort), 0o644); err != nil {
		t.Fatal(err)
	}
	o := &oidcEnv{issuer: fmt.Sprintf("http://localhost:%d", port), healthPort: healthPort}
	o.proc = start(t, dir, "oidc-discovery-provider", "-config", conf)
	return o
}

// kids returns the key IDs /keys lists.
func (o *oidcEnv) kids(t *testing.T) []string {
	t.Helper()
	resp, err := http.Get(o.issuer + "/keys")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatalf("/keys: %v: %s", err, body)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.KeyID)
	}
	return kids
}

// oidcServer starts a server whose JWT-SVIDs carry the provider's issuer.
func oidcServer(t *testing.T) (*serverEnv, int) {
	t.Helper()
	port := freePort(t)
	return startServer(t, fmt.Sprintf("jwt_issuer = \"http://localhost:%d\"", port)), port
}

// verifyThroughDiscovery checks that go-oidc, knowing only the issuer URL,
// accepts a JWT-SVID minted by the server and refuses a forged one.
func verifyThroughDiscovery(t *testing.T, s *serverEnv, o *oidcEnv) (*oidc.IDTokenVerifier, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	provider, err := oidc.NewProvider(ctx, o.issuer)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	verifier := provider.Verifier(&oidc.Config{ClientID: "oidc-test"})
	const id = "spiffe://example.org/oidc-workload"
	token := strings.TrimSpace(s.cli(t, "jwt", "mint", "-spiffeID", id, "-audience", "oidc-test"))
	idt, err := verifier.Verify(ctx, token)
	if err != nil {
		t.Fatalf("JWT-SVID minted by the server refused: %v", err)
	}
	if idt.Subject != id || idt.Issuer != o.issuer {
		t.Fatalf("verified token: sub %q iss %q", idt.Subject, idt.Issuer)
	}

	// The same claims signed by a key not in the set, once under the real
	// kid and once under one of its own, are refused.
	forger, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, kid := range []string{jwtKeyID(t, token), "forged"} {
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: forger, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
		if err != nil {
			t.Fatal(err)
		}
		forged, err := jwt.Signed(signer).Claims(jwt.Claims{
			Issuer: o.issuer, Subject: id, Audience: jwt.Audience{"oidc-test"},
			IssuedAt: jwt.NewNumericDate(time.Now()), Expiry: jwt.NewNumericDate(time.Now().Add(time.Hour)),
		}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := verifier.Verify(ctx, forged); err == nil {
			t.Fatalf("JWT signed by a key not in the set (kid %q) accepted", kid)
		}
	}
	return verifier, ctx
}

// TestOIDCServerAPI: the provider reads the JWT authorities from the
// server's admin socket; a relying party verifies a minted JWT-SVID through
// discovery, and a JWT key rotation reaches /keys after a poll.
func TestOIDCServerAPI(t *testing.T) {
	t.Parallel()
	s, port := oidcServer(t)
	o := startOIDC(t, port, fmt.Sprintf(`server_api {
    address = "unix://%s"
    poll_interval = "500ms"
}`, s.socket))
	verifier, ctx := verifyThroughDiscovery(t, s, o)

	first, _, _ := authorityIDs(t, s.cli(t, "localauthority", "jwt", "show"))
	if kids := o.kids(t); !slices.Equal(kids, []string{first}) {
		t.Fatalf("/keys lists %v, want the active authority %s", kids, first)
	}
	next := oneID(t, s.cli(t, "localauthority", "jwt", "prepare"))
	eventually(t, 20*time.Second, "the prepared key in /keys", func() error {
		if kids := o.kids(t); !slices.Contains(kids, next) || !slices.Contains(kids, first) {
			return fmt.Errorf("/keys lists %v, want %s and %s", kids, first, next)
		}
		return nil
	})
	s.cli(t, "localauthority", "jwt", "activate", "-authorityID", next)
	token := strings.TrimSpace(s.cli(t, "jwt", "mint", "-spiffeID", "spiffe://example.org/rotated", "-audience", "oidc-test"))
	if kid := jwtKeyID(t, token); kid != next {
		t.Fatalf("minted with %s after activating %s", kid, next)
	}
	// go-oidc has cached the old set; an unknown kid makes it fetch again.
	if _, err := verifier.Verify(ctx, token); err != nil {
		t.Fatalf("JWT-SVID signed by the rotated key refused: %v", err)
	}
}

// TestOIDCWorkloadAPI: the provider reads the JWT bundle from a real
// agent's Workload API, as a registered workload.
func TestOIDCWorkloadAPI(t *testing.T) {
	t.Parallel()
	s, port := oidcServer(t)
	token := s.token(t, "spiffe://example.org/node")
	a := startAgent(t, s, token)
	// The Workload API serves bundles only to a caller with an identity.
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", "spiffe://example.org/oidc-provider", "-selector", uidSelector)
	o := startOIDC(t, port, fmt.Sprintf(`workload_api {
    socket_path = %q
    trust_domain = "example.org"
    poll_interval = "500ms"
}`, a.socket))
	verifyThroughDiscovery(t, s, o)

	// A trust domain the agent has no bundle for serves no keys, and says
	// why.
	other := launchOIDC(t, freePort(t), fmt.Sprintf(`workload_api {
    socket_path = %q
    trust_domain = "other.org"
    poll_interval = "500ms"
}`, a.socket))
	eventually(t, 20*time.Second, "the missing bundle logged", func() error {
		if !strings.Contains(other.proc.out.String(), "No bundle for trust domain in Workload API response") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	resp, err := http.Get(other.issuer + "/keys")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 500 || !strings.Contains(string(body), "document not available") {
		t.Fatalf("/keys without a bundle: %d %q", resp.StatusCode, body)
	}
}

// TestOIDCConfigErrors: the binary refuses a bad configuration with the
// file, the key and SPIRE's message, and acme with the reason.
func TestOIDCConfigErrors(t *testing.T) {
	t.Parallel()
	buildOIDC(t)
	dir := shortTempDir(t)
	for _, tc := range []struct{ conf, want string }{
		{`insecure_addr = ":0"
server_api { address = "unix:///tmp/x.sock" }`, "oidc.conf:1: domains: at least one domain must be configured"},
		{`domains = ["localhost"]
acme {
    email = "a@example.org"
    tos_accepted = true
}
server_api { address = "unix:///tmp/x.sock" }`, "ACME needs an ACME CA reachable over the internet"},
	} {
		if err := os.WriteFile(filepath.Join(dir, "oidc.conf"), []byte(tc.conf), 0o644); err != nil {
			t.Fatal(err)
		}
		r := cli(t, dir, "oidc-discovery-provider", "-config", "oidc.conf")
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("exit %d, stderr %q; want 1 and %q", r.code, r.stderr, tc.want)
		}
	}
	if r := cli(t, dir, "oidc-discovery-provider", "-version"); r.code != 0 || strings.TrimSpace(r.stdout) == "" {
		t.Errorf("-version: %d %q", r.code, r.stdout)
	}
}
