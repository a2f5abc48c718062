package interop

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// testPlugins are the SDK plugin binaries of the main module's
// test/plugins that TestExternalPlugins hands to both implementations.
var testPlugins = []string{"keymanager", "upstreamauthority", "servernodeattestor", "notifier", "agentnodeattestor", "workloadattestor"}

var (
	pluginOnce sync.Once
	pluginDir  string
	pluginSums map[string]string // binary name -> hex sha256
	pluginErr  error
)

// buildPlugins builds testPlugins once per test process, from the main
// module (this module cannot import it, but can run its go build), into a
// temp dir that removePlugins deletes when the tests end.
func buildPlugins(t *testing.T) (dir string, sums map[string]string) {
	t.Helper()
	pluginOnce.Do(func() {
		root, err := filepath.Abs(filepath.Join("..", ".."))
		if err != nil {
			pluginErr = err
			return
		}
		if pluginDir, pluginErr = os.MkdirTemp("", "interop-plugins"); pluginErr != nil {
			return
		}
		args := []string{"build", "-o", pluginDir + "/"}
		for _, p := range testPlugins {
			args = append(args, "./test/plugins/"+p)
		}
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			pluginErr = fmt.Errorf("go %s in %s: %w\n%s", strings.Join(args, " "), root, err, out)
			return
		}
		pluginSums = map[string]string{}
		for _, p := range testPlugins {
			data, err := os.ReadFile(filepath.Join(pluginDir, p))
			if err != nil {
				pluginErr = err
				return
			}
			sum := sha256.Sum256(data)
			pluginSums[p] = hex.EncodeToString(sum[:])
		}
	})
	if pluginErr != nil {
		t.Fatalf("build test plugins: %v", pluginErr)
	}
	return pluginDir, pluginSums
}

// removePlugins deletes the binaries buildPlugins made, if any; TestMain
// calls it after the tests.
func removePlugins() {
	if pluginDir != "" {
		os.RemoveAll(pluginDir)
	}
}

// externalPlugin is a plugins block for a test plugin binary, in SPIRE's
// documented form: plugin_cmd, plugin_checksum (hex sha256), plugin_data.
func externalPlugin(t *testing.T, typ, name, binary, data string) string {
	t.Helper()
	dir, sums := buildPlugins(t)
	return fmt.Sprintf(`    %s %q {
        plugin_cmd = %q
        plugin_checksum = %q
        plugin_data {
%s
        }
    }
`, typ, name, filepath.Join(dir, binary), sums[binary], data)
}

// sharedRoot is the upstream root both implementations' servers get
// through the upstreamauthority plugin's cert_file_path/key_file_path, so
// that their SVIDs must verify against one certificate.
type sharedRoot struct {
	cert              *x509.Certificate
	certPath, keyPath string
	sha256            string
}

func newSharedRoot(t *testing.T) sharedRoot {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "interop shared upstream root"},
		// Well beyond ca_ttl, so that the plugin never clips the CA it
		// mints to the root's lifetime in one run and not the other.
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(30 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := shortTempDir(t)
	r := sharedRoot{cert: cert, certPath: filepath.Join(dir, "root.crt"), keyPath: filepath.Join(dir, "root.key")}
	if err := os.WriteFile(r.certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	r.sha256 = hex.EncodeToString(sum[:])
	return r
}

const (
	hmacSecret   = "interop-s3cret"
	hmacAgentID  = "spiffe://example.org/spire/agent/hmac/node-1"
	extWorkload  = "spiffe://example.org/interop/ext-label"
	bothWorkload = "spiffe://example.org/interop/ext-and-unix"
)

// startPluginServer runs im's server with every plugin the test can make
// external: KeyManager, UpstreamAuthority (root), NodeAttestor (HMAC, with
// the AgentStore host service) and Notifier (writing to notified).
func startPluginServer(t *testing.T, im impl, root sharedRoot, notified string) *server {
	t.Helper()
	return startServerWith(t, im, func(string) string {
		return externalPlugin(t, "KeyManager", "ext_km", "keymanager", "") +
			externalPlugin(t, "UpstreamAuthority", "ext_upstream", "upstreamauthority",
				fmt.Sprintf("            cert_file_path = %q\n            key_file_path = %q", root.certPath, root.keyPath)) +
			externalPlugin(t, "NodeAttestor", "hmac", "servernodeattestor",
				fmt.Sprintf("            secret = %q\n            use_agent_store = true", hmacSecret)) +
			externalPlugin(t, "Notifier", "ext_notifier", "notifier", fmt.Sprintf("            path = %q", notified))
	})
}

// startPluginAgent runs im's agent against s, attesting with the external
// HMAC NodeAttestor as node-1, with the external WorkloadAttestor (label
// "interop") beside the built-in unix one.
func startPluginAgent(t *testing.T, im impl, s *server) *agent {
	t.Helper()
	dir := shortTempDir(t)
	bundle := filepath.Join(dir, "bootstrap.crt")
	if err := os.WriteFile(bundle, []byte(s.cli(t, s.impl, "bundle", "show")), 0o644); err != nil {
		t.Fatal(err)
	}
	a := &agent{impl: im, dir: dir, socket: filepath.Join(dir, "agent.sock"), conf: filepath.Join(dir, "agent.conf")}
	conf := fmt.Sprintf(`agent {
    data_dir = %q
    log_level = "DEBUG"
    server_address = "127.0.0.1"
    server_port = "%d"
    socket_path = %q
    trust_bundle_path = %q
    trust_domain = %q
}
plugins {
    KeyManager "disk" {
        plugin_data {
            directory = %q
        }
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
`, filepath.Join(dir, "data"), s.port, a.socket, bundle, trustDomain, filepath.Join(dir, "data")) +
		externalPlugin(t, "NodeAttestor", "hmac", "agentnodeattestor",
			fmt.Sprintf("            node_name = \"node-1\"\n            secret = %q", hmacSecret)) +
		externalPlugin(t, "WorkloadAttestor", "ext_wl", "workloadattestor", `            label = "interop"`) +
		"}\n"
	if err := os.WriteFile(a.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	a.start(t, "")
	return a
}

// shownAgent is what `spire-server agent show -output json` says about an
// agent, less what differs per run (serial, expiry).
type shownAgent struct {
	ID struct {
		TrustDomain string `json:"trust_domain"`
		Path        string `json:"path"`
	} `json:"id"`
	AttestationType string `json:"attestation_type"`
	Selectors       []struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	} `json:"selectors"`
	Banned      bool `json:"banned"`
	CanReattest bool `json:"can_reattest"`
}

func (a shownAgent) String() string {
	var sels []string
	for _, s := range a.Selectors {
		sels = append(sels, s.Type+":"+s.Value)
	}
	slices.Sort(sels)
	return fmt.Sprintf("id=spiffe://%s%s attestation_type=%s selectors=%v banned=%v can_reattest=%v",
		a.ID.TrustDomain, a.ID.Path, a.AttestationType, sels, a.Banned, a.CanReattest)
}

// showAgent runs cli's `agent show` against s.
func showAgent(t *testing.T, s *server, cli impl, id string) string {
	t.Helper()
	out := s.cli(t, cli, "agent", "show", "-spiffeID", id, "-output", "json")
	var a shownAgent
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		t.Fatalf("%s agent show against %s server: %v\n%s", cli.name, s.impl.name, err, out)
	}
	return a.String()
}

// bundleEvent is one line of the notifier plugin's file (the JSON of the
// main module's test/plugins/bundlelog.Line, which this module cannot
// import), less its sequence number.
type bundleEvent struct {
	Event           string   `json:"event"`
	TrustDomain     string   `json:"trust_domain"`
	X509Authorities int      `json:"x509_authorities"`
	JWTAuthorities  int      `json:"jwt_authorities"`
	X509SHA256      []string `json:"x509_sha256"`
}

func readBundleEvents(path string) ([]bundleEvent, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []bundleEvent
	dec := json.NewDecoder(strings.NewReader(string(data)))
	for dec.More() {
		var e bundleEvent
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("parse %s: %w", path, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// pluginRun is what one server/agent pair produced, reduced to what must
// not depend on the implementations.
type pluginRun struct {
	agent     string   // agent show, by the server's own CLI
	agentByUp string   // agent show, by upstream's CLI
	ids       []string // SPIFFE IDs the workload got
	issued    issued   // shape of the SVID for extWorkload, its bundle and JWT-SVID
	loaded    string   // the notifier's first "loaded" event
}

// TestExternalPlugins runs the same plugin configuration on upstream
// SPIRE and on ours, server and agent, each pair and the mixed pairs: a CA
// whose keys an external KeyManager holds under an external
// UpstreamAuthority's root (one root, shared by all runs), HMAC node
// attestation by an external NodeAttestor pair using the AgentStore host
// service, workload selectors from an external WorkloadAttestor beside
// unix, and a Notifier told of the bundle at start-up. Every run must give
// what upstream-on-both-sides gives.
func TestExternalPlugins(t *testing.T) {
	root := newSharedRoot(t)
	const ref = "spire-server/spire-agent"
	pairs := []struct {
		name          string
		server, agent *impl
	}{
		{ref, &upstream, &upstream},
		{"our-server/our-agent", &ours, &ours},
		{"our-server/spire-agent", &ours, &upstream},
		{"spire-server/our-agent", &upstream, &ours},
	}
	runs := map[string]pluginRun{}
	for _, p := range pairs {
		t.Run(p.name, func(t *testing.T) {
			runs[p.name] = pluginFlow(t, *p.server, *p.agent, root)
		})
	}
	want, ok := runs[ref]
	if !ok {
		t.Fatalf("the reference run %s failed; nothing to compare with", ref)
	}
	for _, p := range pairs[1:] {
		got, ok := runs[p.name]
		if !ok {
			continue
		}
		if got.agent != want.agent {
			t.Errorf("%s: agent show (server's own CLI) differs from upstream's:\n got:      %s\n upstream: %s", p.name, got.agent, want.agent)
		}
		if got.agentByUp != want.agentByUp {
			t.Errorf("%s: agent show (upstream CLI) differs from upstream's:\n got:      %s\n upstream: %s", p.name, got.agentByUp, want.agentByUp)
		}
		if !slices.Equal(got.ids, want.ids) {
			t.Errorf("%s: workload got SVIDs %v, upstream %v", p.name, got.ids, want.ids)
		}
		if got.loaded != want.loaded {
			t.Errorf("%s: notifier loaded event differs from upstream's:\n got:      %s\n upstream: %s", p.name, got.loaded, want.loaded)
		}
		compareIssued(t, p.name, got.issued, want.issued)
	}
}

func pluginFlow(t *testing.T, serverImpl, agentImpl impl, root sharedRoot) pluginRun {
	notified := filepath.Join(shortTempDir(t), "notifier.jsonl")
	s := startPluginServer(t, serverImpl, root, notified)

	// The bundle a server under an UpstreamAuthority serves is the
	// upstream's root.
	if got := pemCerts(t, s.cli(t, serverImpl, "bundle", "show")); !sameCerts(got, []*x509.Certificate{root.cert}) {
		t.Errorf("bundle show has %d certificates, want just the shared upstream root", len(got))
	}

	s.cli(t, serverImpl, "entry", "create", "-parentID", hmacAgentID, "-spiffeID", extWorkload,
		"-selector", "ext_wl:label:interop")
	// Selectors from both workload attestors at once, and the trust domain
	// the external one learnt from its core configuration.
	s.cli(t, serverImpl, "entry", "create", "-parentID", hmacAgentID, "-spiffeID", bothWorkload,
		"-selector", uidSelector, "-selector", "ext_wl:"+strings.TrimPrefix(uidSelector, "unix:"),
		"-selector", "ext_wl:trust_domain:"+trustDomain)
	// A label the external attestor does not give must match nothing.
	s.cli(t, serverImpl, "entry", "create", "-parentID", hmacAgentID, "-spiffeID", "spiffe://example.org/interop/other-label",
		"-selector", "ext_wl:label:other")

	a := startPluginAgent(t, agentImpl, s)

	var run pluginRun
	run.agent = showAgent(t, s, serverImpl, hmacAgentID)
	run.agentByUp = showAgent(t, s, upstream, hmacAgentID)
	// SPIRE's behaviour, checked on every run: the ID the external
	// attestor named, its selectors typed by the plugin's name, and
	// seen_before false since the AgentStore had no such agent yet.
	if wantAgent := "id=" + hmacAgentID + " attestation_type=hmac selectors=[hmac:node:node-1 hmac:seen_before:false] banned=false can_reattest=true"; run.agent != wantAgent {
		t.Errorf("agent show:\n got:  %s\n want: %s", run.agent, wantAgent)
	}

	c, err := workloadapi.New(context.Background(), workloadapi.WithAddr(a.addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var x *workloadapi.X509Context
	eventually(t, 60*time.Second, "X.509-SVIDs for both workload entries", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got, err := c.FetchX509Context(ctx)
		if err != nil {
			return err
		}
		if len(got.SVIDs) < 2 {
			return fmt.Errorf("%d SVIDs", len(got.SVIDs))
		}
		x = got
		return nil
	})
	byID := map[string]*x509svid.SVID{}
	for _, sv := range x.SVIDs {
		run.ids = append(run.ids, sv.ID.String())
		byID[sv.ID.String()] = sv
	}
	slices.Sort(run.ids)
	if want := []string{bothWorkload, extWorkload}; !slices.Equal(run.ids, want) {
		t.Errorf("workload got SVIDs %v, want %v", run.ids, want)
	}

	// Every SVID chains to the shared root alone, not only to the bundle
	// the agent sent with it.
	td := spiffeid.RequireTrustDomainFromString(trustDomain)
	rootOnly := x509bundle.FromX509Authorities(td, []*x509.Certificate{root.cert})
	for id, sv := range byID {
		if _, _, err := x509svid.Verify(sv.Certificates, x.Bundles); err != nil {
			t.Errorf("%s does not verify against the Workload API bundle: %v", id, err)
		}
		if _, chains, err := x509svid.Verify(sv.Certificates, rootOnly); err != nil {
			t.Errorf("%s does not verify against the shared upstream root: %v", id, err)
		} else if top := chains[0][len(chains[0])-1]; !top.Equal(root.cert) {
			t.Errorf("%s chains to %s, want the shared root", id, top.Subject)
		}
	}
	svid, ok := byID[extWorkload]
	if !ok {
		t.Fatalf("no SVID for %s", extWorkload)
	}
	b, err := x.Bundles.GetX509BundleForTrustDomain(td)
	if err != nil {
		t.Fatal(err)
	}
	if !sameCerts(b.X509Authorities(), []*x509.Certificate{root.cert}) {
		t.Errorf("Workload API bundle has %d authorities, want just the shared upstream root", len(b.X509Authorities()))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	js, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: audience, Subject: spiffeid.RequireFromString(extWorkload)})
	if err != nil {
		t.Fatalf("FetchJWTSVID: %v", err)
	}
	jb, err := c.FetchJWTBundles(ctx)
	if err != nil {
		t.Fatalf("FetchJWTBundles: %v", err)
	}
	parsed, err := jwtsvid.ParseAndValidate(js.Marshal(), jb, []string{audience})
	if err != nil {
		t.Fatalf("JWT-SVID does not validate against the fetched JWT bundle: %v", err)
	}
	if parsed.ID.String() != extWorkload {
		t.Errorf("JWT-SVID for %s, want %s", parsed.ID, extWorkload)
	}
	run.issued.jwt = jwtShape(t, js.Marshal(), parsed)
	for _, cert := range svid.Certificates {
		run.issued.svid = append(run.issued.svid, certShape(cert))
	}
	for _, cert := range b.X509Authorities() {
		run.issued.bundle = append(run.issued.bundle, certShape(cert))
	}
	// The notifier heard of the bundle at start-up, and that bundle is the
	// shared root.
	eventually(t, 30*time.Second, "a loaded event at the notifier", func() error {
		events, err := readBundleEvents(notified)
		if err != nil {
			return err
		}
		for _, e := range events {
			if e.Event == "loaded" {
				if !slices.Contains(e.X509SHA256, root.sha256) {
					t.Errorf("loaded event's X.509 authorities %v lack the shared root %s", e.X509SHA256, root.sha256)
				}
				run.loaded = fmt.Sprintf("%+v", e)
				return nil
			}
		}
		return fmt.Errorf("events %+v", events)
	})
	t.Logf("agent: %s\nnotifier: %s\nX.509-SVID chain:\n  %s\nJWT-SVID: %s", run.agent, run.loaded, strings.Join(run.issued.svid, "\n  "), run.issued.jwt)
	return run
}

// TestExternalPluginChecksum starts each implementation's server with a
// KeyManager plugin_checksum that does not fit the binary: both must refuse
// to start rather than run a binary that is not the one configured.
func TestExternalPluginChecksum(t *testing.T) {
	dir, sums := buildPlugins(t)
	for _, tc := range []struct {
		name, checksum string
	}{
		// The hash of another real binary: well formed, wrong.
		{"other binary's sha256", sums["notifier"]},
		{"not hex", strings.Repeat("z", 64)},
	} {
		for _, im := range []*impl{&upstream, &ours} {
			t.Run(tc.name+"/"+im.name, func(t *testing.T) {
				sdir := shortTempDir(t)
				conf := filepath.Join(sdir, "server.conf")
				if err := os.WriteFile(conf, []byte(fmt.Sprintf(`server {
    bind_address = "127.0.0.1"
    bind_port = "%d"
    socket_path = %q
    trust_domain = %q
    data_dir = %q
}
plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = %q
        }
    }
    KeyManager "ext_km" {
        plugin_cmd = %q
        plugin_checksum = %q
        plugin_data {}
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
}
`, freePort(t), filepath.Join(sdir, "api.sock"), trustDomain, filepath.Join(sdir, "data"),
					filepath.Join(sdir, "data", "datastore.sqlite3"), filepath.Join(dir, "keymanager"), tc.checksum)), 0o644); err != nil {
					t.Fatal(err)
				}
				p := start(t, sdir, im.server(), "run", "-config", conf)
				select {
				case <-p.done:
				case <-time.After(60 * time.Second):
					t.Fatalf("%s server still running 60s after start with a wrong plugin_checksum", im.name)
				}
				if p.cmd.ProcessState.Success() {
					t.Errorf("%s server exited 0 with a wrong plugin_checksum", im.name)
				}
				t.Logf("%s: %v; last output lines:\n%s", im.name, p.cmd.ProcessState, lastLines(p.out.String(), 3))
			})
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
