package config

import (
	"bytes"
	"errors"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
)

const minimalPlugins = `
plugins {
    NodeAttestor "join_token" {}
    KeyManager "memory" {}
    WorkloadAttestor "unix" {}
}
`

const base = `    data_dir = "d"
    server_address = "spire-server"
    trust_domain = "example.org"
`

func withAgent(body string) string {
	return "agent {\n" + body + "\n}\n" + minimalPlugins
}

func TestQuickstart(t *testing.T) {
	c, err := Load("testdata/agent.conf", false)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Agent
	if a.DataDir != "./data/agent" || a.LogLevel != slog.LevelDebug || a.ServerAddress != "127.0.0.1" || a.ServerPort != 8081 ||
		a.SocketPath != "/tmp/spire-agent/public/api.sock" || a.TrustBundlePath != "./conf/agent/dummy_root_ca.crt" ||
		a.TrustDomain.Name() != "example.org" {
		t.Errorf("agent block: %+v", a)
	}
	if a.TrustBundleFormat != TrustBundlePEM || a.SyncInterval != DefaultSyncInterval || a.InsecureBootstrap || a.LogFormat != "text" {
		t.Errorf("defaults: %+v", a)
	}
	var got []string
	for _, p := range c.Plugins {
		got = append(got, p.Label())
	}
	if strings.Join(got, ",") != `NodeAttestor "join_token",KeyManager "disk",WorkloadAttestor "unix"` {
		t.Errorf("plugins %v", got)
	}
	var disk struct {
		Directory string `hcl:"directory"`
	}
	if err := c.EnabledPlugins(TypeKeyManager)[0].DecodeData(&disk); err != nil || disk.Directory != "./data/agent" {
		t.Errorf("KeyManager data: %+v %v", disk, err)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("warnings %q", c.Warnings)
	}
}

func TestValues(t *testing.T) {
	c, err := Parse("agent.conf", []byte(withAgent(base+`
    server_port = 9443
    socket_path = "/run/spire/agent/public/api.sock"
    admin_socket_path = "/run/spire/agent/admin/admin.sock"
    trust_bundle_url = "https://bundle.example.org/bundle"
    trust_bundle_format = "SPIFFE"
    join_token = "abc"
    log_format = "json"
    experimental {
        sync_interval = "30s"
        named_pipe_name = "x"
    }
    allowed_foreign_jwt_claims = ["tenant"]`)), false)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Agent
	if a.ServerPort != 9443 || a.AdminSocketPath != "/run/spire/agent/admin/admin.sock" || a.TrustBundleURL == "" ||
		a.TrustBundleFormat != TrustBundleSPIFFE || a.JoinToken != "abc" || a.LogFormat != "json" || a.SyncInterval != 30*time.Second {
		t.Errorf("agent: %+v", a)
	}
	all := strings.Join(c.Warnings, "\n")
	if !strings.Contains(all, "agent.experimental.named_pipe_name") || !strings.Contains(all, "agent.allowed_foreign_jwt_claims") {
		t.Errorf("warnings: %s", all)
	}

	c, err = Parse("agent.conf", []byte(withAgent(base+`    insecure_bootstrap = true`)), false)
	if err != nil || !c.Agent.InsecureBootstrap {
		t.Errorf("insecure_bootstrap: %+v %v", c, err)
	}
	if c.Agent.NoChangeNotices {
		t.Error("change notices are off by default")
	}
	c, err = Parse("agent.conf", []byte(withAgent(base+"    insecure_bootstrap = true\n    change_notices = false")), false)
	if err != nil || !c.Agent.NoChangeNotices || len(c.Warnings) != 0 {
		t.Errorf("change_notices = false: %+v %v %q", c.Agent, err, c.Warnings)
	}
}

// TestSVIDCacheSizes: SPIRE v1.13.3 reads the sizes in the agent block;
// in experimental (where older releases read them, with disable_lru_cache)
// they warn and change nothing.
func TestSVIDCacheSizes(t *testing.T) {
	c, err := Parse("agent.conf", []byte(withAgent(base+`    insecure_bootstrap = true
    x509_svid_cache_max_size = 50
    jwt_svid_cache_max_size = "0"
    experimental {
        x509_svid_cache_max_size = 7
        disable_lru_cache = true
    }`)), false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Agent.X509SVIDCacheMaxSize != 50 || c.Agent.JWTSVIDCacheMaxSize != 0 {
		t.Errorf("sizes %d, %d; want 50, 0", c.Agent.X509SVIDCacheMaxSize, c.Agent.JWTSVIDCacheMaxSize)
	}
	all := strings.Join(c.Warnings, "\n")
	for _, w := range []string{
		"agent.experimental.x509_svid_cache_max_size: SPIRE v1.13.3 reads it in the agent block, not in experimental; ignored",
		"agent.experimental.disable_lru_cache: SPIRE v1.13.3 has no such setting",
	} {
		if !strings.Contains(all, w) {
			t.Errorf("warnings %q lack %q", all, w)
		}
	}
	if strings.Contains(all, "agent.x509_svid_cache_max_size") || strings.Contains(all, "agent.jwt_svid_cache_max_size") {
		t.Errorf("a size in the agent block warns: %q", all)
	}
}

func TestErrors(t *testing.T) {
	bundle := "    trust_bundle_path = \"b.pem\"\n"
	for _, tc := range []struct {
		name, text string
		want       []string
	}{
		{"no bootstrap trust", withAgent(base),
			[]string{`agent.conf: agent.trust_bundle_path is required (set trust_bundle_path (or -trustBundle)`, `trust_bundle_url`}},
		{"two bootstrap ways", withAgent(base + bundle + "    insecure_bootstrap = true"),
			[]string{`agent.trust_bundle_path: trust_bundle_path, trust_bundle_url and insecure_bootstrap are exclusive (keep only one)`}},
		{"http bundle url", withAgent(base + `    trust_bundle_url = "http://bundle.example.org/"`),
			[]string{`agent.trust_bundle_url: "http://bundle.example.org/" must use https`}},
		{"missing data dir", withAgent("    server_address = \"s\"\n    trust_domain = \"example.org\"\n" + bundle),
			[]string{`agent.conf: agent.data_dir is required (set data_dir in the agent block or pass -dataDir)`}},
		{"missing server address", withAgent("    data_dir = \"d\"\n    trust_domain = \"example.org\"\n" + bundle),
			[]string{`agent.server_address is required`}},
		{"missing trust domain", withAgent("    data_dir = \"d\"\n    server_address = \"s\"\n" + bundle),
			[]string{`agent.trust_domain is required`}},
		{"profiling without a port", withAgent(base + bundle + "    profiling_enabled = true"),
			[]string{`agent.conf:6: agent.profiling_enabled: set without profiling_port`}},
		{"zero server port", withAgent(base + bundle + "    server_port = 0"),
			[]string{`agent.conf:6: agent.server_port: invalid port "0"`}},
		{"bad server port", withAgent(base + bundle + "    server_port = \"eighty\""),
			[]string{`agent.conf:6: agent.server_port: invalid port "eighty"`}},
		{"bad sync interval", withAgent(base + bundle + "    experimental {\n      sync_interval = \"5 seconds\"\n    }"),
			[]string{`agent.conf:7: agent.experimental.sync_interval: invalid duration "5 seconds"`}},
		{"unknown experimental key", withAgent(base + bundle + "    experimental {\n      sync_intervall = \"5s\"\n    }"),
			[]string{`agent.conf:7: agent.experimental.sync_intervall: unknown key (did you mean "sync_interval"?)`}},
		{"negative svid cache size", withAgent(base + bundle + "    x509_svid_cache_max_size = -1"),
			[]string{`agent.conf:6: agent.x509_svid_cache_max_size: should not be negative`}},
		{"bad jwt cache size", withAgent(base + bundle + "    jwt_svid_cache_max_size = \"many\""),
			[]string{`agent.conf:6: agent.jwt_svid_cache_max_size: should not be negative: want a whole number`}},
		{"bad bundle format", withAgent(base + bundle + "    trust_bundle_format = \"der\""),
			[]string{`agent.conf:6: agent.trust_bundle_format: invalid trust bundle format "der" (use pem or spiffe)`}},
		{"bad log level", withAgent(base + bundle + "    log_level = \"TRACE\""),
			[]string{`agent.conf:6: agent.log_level: invalid log level "TRACE"`}},
		{"unknown agent key", withAgent(base + bundle + "    server_adress = \"x\""),
			[]string{`agent.conf:6: agent.server_adress: unknown key (did you mean "server_address"?)`}},
		{"admin socket beside workload socket", withAgent(base + bundle + "    admin_socket_path = \"/tmp/spire-agent/public/admin.sock\""),
			[]string{`agent.admin_socket_path: "/tmp/spire-agent/public/admin.sock" is inside "/tmp/spire-agent/public"`}},
		{"server plugin type", withAgent(base+bundle) + "plugins {}\n",
			[]string{`plugins: set more than once`}},
		{"two node attestors", "agent {\n" + base + bundle + "}\nplugins {\n  NodeAttestor \"a\" {}\n  NodeAttestor \"b\" {}\n  KeyManager \"m\" {}\n  WorkloadAttestor \"unix\" {}\n}\n",
			[]string{`agent.conf:9: plugins: exactly one NodeAttestor plugin may be enabled, found 2`}},
		{"no workload attestor", "agent {\n" + base + bundle + "}\nplugins {\n  NodeAttestor \"a\" {}\n  KeyManager \"m\" {}\n}\n",
			[]string{`at least one WorkloadAttestor plugin must be enabled, found 0`}},
		{"datastore on agent", "agent {\n" + base + bundle + "}\nplugins {\n  DataStore \"sql\" {}\n  NodeAttestor \"a\" {}\n  KeyManager \"m\" {}\n  WorkloadAttestor \"unix\" {}\n}\n",
			[]string{`agent.conf:8: plugins.DataStore: unknown plugin type (use one of KeyManager, NodeAttestor, WorkloadAttestor, SVIDStore)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("agent.conf", []byte(tc.text), false)
			if err == nil {
				t.Fatalf("no error; config %+v", c)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error:\n%v\ndoes not contain:\n%s", err, w)
				}
			}
			var e *hclconf.Error
			if !errors.As(err, &e) || e.File != "agent.conf" {
				t.Errorf("error is not a *hclconf.Error naming the file: %#v", err)
			}
		})
	}
}

func writeConf(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestFromRunArgs(t *testing.T) {
	path := writeConf(t, withAgent(base+`    join_token = "from-file"
    trust_bundle_path = "file.pem"`))
	c, err := FromRunArgs([]string{"-config", path, "-joinToken", "from-flag", "-serverAddress", "10.0.0.1",
		"-serverPort", "8443", "-socketPath", "/run/a.sock", "-trustDomain", "flag.example", "-trustBundle", "flag.pem",
		"-dataDir", "/flag", "-logLevel", "error", "-logFormat", "json", "-trustBundleFormat", "spiffe"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	a := c.Agent
	if a.JoinToken != "from-flag" || a.ServerAddress != "10.0.0.1" || a.ServerPort != 8443 || a.SocketPath != "/run/a.sock" ||
		a.TrustDomain.Name() != "flag.example" || a.TrustBundlePath != "flag.pem" || a.DataDir != "/flag" ||
		a.LogLevel != slog.LevelError || a.LogFormat != "json" || a.TrustBundleFormat != TrustBundleSPIFFE {
		t.Errorf("flags did not override: %+v", a)
	}
	c, err = FromRunArgs([]string{"-config", path}, &bytes.Buffer{})
	if err != nil || c.Agent.JoinToken != "from-file" {
		t.Errorf("file join token: %+v %v", c, err)
	}

	// The flags supply bootstrap trust and required values missing in the file.
	bare := writeConf(t, minimalPlugins)
	c, err = FromRunArgs([]string{"-config", bare, "-dataDir", "/d", "-serverAddress", "s", "-trustDomain", "example.org",
		"-insecureBootstrap"}, &bytes.Buffer{})
	if err != nil || !c.Agent.InsecureBootstrap {
		t.Errorf("insecure bootstrap from flag: %+v %v", c, err)
	}
	c, err = FromRunArgs([]string{"-config", bare, "-dataDir", "/d", "-serverAddress", "s", "-trustDomain", "example.org",
		"-trustBundleUrl", "https://b.example.org/bundle"}, &bytes.Buffer{})
	if err != nil || c.Agent.TrustBundleURL != "https://b.example.org/bundle" {
		t.Errorf("bundle url from flag: %+v %v", c, err)
	}

	// A flag that adds a second bootstrap method conflicts with the file.
	_, err = FromRunArgs([]string{"-config", path, "-insecureBootstrap"}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "exclusive") {
		t.Errorf("file bundle + -insecureBootstrap: %v", err)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-config", path, "-serverPort", "0"}, `flag -serverPort: invalid port "0"`},
		{[]string{"-config", path, "-trustDomain", "UPPER.example"}, `flag -trustDomain: invalid trust domain`},
		{[]string{"-config", path, "-trustBundleFormat", "der"}, `flag -trustBundleFormat: invalid trust bundle format`},
		{[]string{"-config", filepath.Join(t.TempDir(), "missing.conf")}, `(pass -config with the path of agent.conf)`},
	} {
		if _, err := FromRunArgs(tc.args, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("FromRunArgs(%q) = %v, want %q", tc.args, err, tc.want)
		}
	}
	var stderr bytes.Buffer
	if _, err := FromRunArgs([]string{"-help"}, &stderr); !errors.Is(err, flag.ErrHelp) || !strings.Contains(stderr.String(), "-joinToken") {
		t.Errorf("-help: %v %q", err, stderr.String())
	}
}

func TestExpandEnv(t *testing.T) {
	t.Setenv("SPIRE_TEST_TOKEN", "tok-123")
	c, err := Parse("agent.conf", []byte(withAgent(base+`    insecure_bootstrap = true
    join_token = "${SPIRE_TEST_TOKEN}"`)), true)
	if err != nil || c.Agent.JoinToken != "tok-123" {
		t.Errorf("expandEnv: %+v %v", c, err)
	}
}

func TestProfiling(t *testing.T) {
	c, err := Parse("agent.conf", []byte(withAgent(base+`    trust_bundle_path = "b.pem"
    profiling_enabled = true
    profiling_port = 6061
    profiling_names = ["heap"]`)), false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Agent.ProfilingPort != 6061 {
		t.Errorf("profiling port = %d, want 6061", c.Agent.ProfilingPort)
	}
	if w := strings.Join(c.Warnings, "\n"); !strings.Contains(w, "agent.profiling_names: not implemented") {
		t.Errorf("no warning for profiling_names: %q", w)
	}
}
