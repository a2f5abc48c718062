package config

import (
	"bytes"
	"errors"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
)

const minimalPlugins = `
plugins {
    DataStore "sql" { plugin_data { database_type = "sqlite3" } }
    KeyManager "memory" {}
    NodeAttestor "join_token" {}
}
`

// withServer returns a complete config whose server block holds body.
func withServer(body string) string {
	return "server {\n" + body + "\n}\n" + minimalPlugins
}

// withPlugins is withServer with more plugin blocks; they start at line 8
// when body is two lines long.
func withPlugins(body, more string) string {
	return strings.Replace(withServer(body), "plugins {\n", "plugins {\n"+more, 1)
}

func TestQuickstart(t *testing.T) {
	c, err := Load("testdata/server.conf", false)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Server
	if s.BindAddress != "127.0.0.1" || s.BindPort != 8081 || s.SocketPath != "/tmp/spire-server/private/api.sock" ||
		s.TrustDomain.Name() != "example.org" || s.DataDir != "./data/server" || s.LogLevel != slog.LevelDebug ||
		s.CATTL != 168*time.Hour || s.DefaultX509SVIDTTL != 48*time.Hour {
		t.Errorf("server block: %+v", s)
	}
	// Defaults for what the quickstart leaves out.
	if s.LogFormat != "text" || s.CAKeyType != KeyTypeECP256 || s.JWTKeyType != KeyTypeECP256 ||
		s.DefaultJWTSVIDTTL != 5*time.Minute || s.AgentTTL != 0 ||
		!slices.Equal(s.CASubject.Country, []string{"US"}) || !slices.Equal(s.CASubject.Organization, []string{"SPIFFE"}) {
		t.Errorf("defaults: %+v", s)
	}
	if c.HealthChecks != hclconf.DefaultHealthChecks() {
		t.Errorf("health checks: %+v", c.HealthChecks)
	}
	var got []string
	for _, p := range c.Plugins {
		got = append(got, p.Label()+"@"+p.Pos.String())
	}
	want := []string{`DataStore "sql"@testdata/server.conf:12`, `KeyManager "disk"@testdata/server.conf:18`, `NodeAttestor "join_token"@testdata/server.conf:23`}
	if !slices.Equal(got, want) {
		t.Errorf("plugins %v, want %v", got, want)
	}
	var sql struct {
		DatabaseType     string `hcl:"database_type"`
		ConnectionString string `hcl:"connection_string"`
	}
	if err := c.EnabledPlugins(TypeDataStore)[0].DecodeData(&sql); err != nil || sql.DatabaseType != "sqlite3" ||
		sql.ConnectionString != "./data/server/datastore.sqlite3" {
		t.Errorf("DataStore data: %+v %v", sql, err)
	}
	// 168h < 6 x 48h: SPIRE warns about this too.
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "server.ca_ttl") {
		t.Errorf("warnings: %q", c.Warnings)
	}
}

func TestDefaultsAndValues(t *testing.T) {
	c, err := Parse("server.conf", []byte(withServer(`
    trust_domain = "example.org"
    data_dir = "/var/lib/spire"
    bind_port = 0
    log_level = "warn"
    log_format = "JSON"
    log_file = "/var/log/spire.log"
    ca_key_type = "ec-p384"
    default_jwt_svid_ttl = "10m"
    agent_ttl = "72h"
    jwt_issuer = "https://oidc.example.org"
    admin_ids = ["spiffe://example.org/admin", "spiffe://other.org/ops"]
    ca_subject {
        country = ["DE"]
        organization = ["Acme"]
        common_name = "acme-ca"
    }`)), false)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Server
	if s.BindAddress != DefaultBindAddress || s.BindPort != 0 || s.SocketPath != DefaultSocketPath || s.LogLevel != slog.LevelWarn ||
		s.LogFormat != "json" || s.LogFile != "/var/log/spire.log" || s.CATTL != DefaultCATTL || s.DefaultX509SVIDTTL != time.Hour ||
		s.DefaultJWTSVIDTTL != 10*time.Minute || s.AgentTTL != 72*time.Hour || s.JWTIssuer != "https://oidc.example.org" {
		t.Errorf("server: %+v", s)
	}
	// jwt_key_type follows ca_key_type when not set, as in SPIRE.
	if s.CAKeyType != KeyTypeECP384 || s.JWTKeyType != KeyTypeECP384 {
		t.Errorf("key types %q %q", s.CAKeyType, s.JWTKeyType)
	}
	if len(s.AdminIDs) != 2 || s.AdminIDs[1].String() != "spiffe://other.org/ops" {
		t.Errorf("admin ids %v", s.AdminIDs)
	}
	if s.CASubject.CommonName != "acme-ca" || !slices.Equal(s.CASubject.Country, []string{"DE"}) {
		t.Errorf("ca subject %+v", s.CASubject)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("warnings: %q", c.Warnings)
	}

	c, err = Parse("server.conf", []byte(withServer(`trust_domain = "example.org"
    data_dir = "d"
    ca_key_type = "rsa-2048"
    jwt_key_type = "ec-p256"`)), false)
	if err != nil || c.Server.CAKeyType != KeyTypeRSA2048 || c.Server.JWTKeyType != KeyTypeECP256 {
		t.Errorf("separate jwt_key_type: %+v %v", c, err)
	}
}

func TestErrors(t *testing.T) {
	base := "    trust_domain = \"example.org\"\n    data_dir = \"d\"\n"
	for _, tc := range []struct {
		name, text string
		want       []string
	}{
		{"ca_ttl in days", withServer(base + `    ca_ttl = "7d"`),
			[]string{`server.conf:4: server.ca_ttl: invalid duration "7d" (use Go duration syntax such as "168h")`}},
		{"duration without unit", withServer(base + `    default_x509_svid_ttl = "3600"`),
			[]string{`server.conf:4: server.default_x509_svid_ttl: invalid duration "3600"`}},
		{"negative duration", withServer(base + `    agent_ttl = "-1h"`),
			[]string{`server.conf:4: server.agent_ttl: must not be negative`}},
		{"zero ca ttl", withServer(base + `    ca_ttl = "0s"`),
			[]string{`server.conf:4: server.ca_ttl: must be greater than zero (remove it to use the default)`}},
		{"port out of range", withServer(base + `    bind_port = 70000`),
			[]string{`server.conf:4: server.bind_port: invalid port "70000" (use a number from 1 to 65535)`}},
		{"port not a number", withServer(base + `    bind_port = "http"`),
			[]string{`server.conf:4: server.bind_port: invalid port "http"`}},
		{"bad key type", withServer(base + `    ca_key_type = "ed25519"`),
			[]string{`server.conf:4: server.ca_key_type: invalid key type "ed25519" (use ec-p256, ec-p384, rsa-2048 or rsa-4096)`}},
		{"bad jwt key type", withServer(base + `    jwt_key_type = "ec-p521"`),
			[]string{`server.conf:4: server.jwt_key_type: invalid key type "ec-p521"`}},
		{"bad log level", withServer(base + `    log_level = "verbose"`),
			[]string{`server.conf:4: server.log_level: invalid log level "verbose" (use DEBUG, INFO, WARN or ERROR)`}},
		{"bad log format", withServer(base + `    log_format = "xml"`),
			[]string{`server.conf:4: server.log_format: invalid log format "xml" (use text or json)`}},
		{"bad trust domain", withServer(`    trust_domain = "Example.org"` + "\n" + `    data_dir = "d"`),
			[]string{`server.conf:2: server.trust_domain: invalid trust domain "Example.org"`}},
		{"missing trust domain", withServer(`    data_dir = "d"`),
			[]string{`server.conf: server.trust_domain is required (set trust_domain in the server block or pass -trustDomain)`}},
		{"missing data dir", withServer(`    trust_domain = "example.org"`),
			[]string{`server.conf: server.data_dir is required (set data_dir in the server block or pass -dataDir)`}},
		{"no server block", minimalPlugins,
			[]string{`server.trust_domain is required`, `server.data_dir is required`}},
		{"unknown server key", withServer(base + `    bogus_key = 1`),
			[]string{`server.conf:4: server.bogus_key: unknown key`}},
		{"typo suggestion", withServer(base + `    trust_domian = "x"`),
			[]string{`server.conf:4: server.trust_domian: unknown key (did you mean "trust_domain"?)`}},
		{"unknown top-level key", withServer(base) + "\nagent {}\n",
			[]string{`server.conf:13: agent: unknown key`}},
		{"unknown health_checks key", withServer(base) + "\nhealth_checks {\n  port = 80\n}\n",
			[]string{`server.conf:14: health_checks.port: unknown key`}},
		{"unknown ca_subject key", withServer(base + "    ca_subject {\n      org = [\"x\"]\n    }"),
			[]string{`server.conf:5: server.ca_subject.org: unknown key`}},
		{"bad admin id", withServer(base + `    admin_ids = ["example.org/admin"]`),
			[]string{`server.conf:4: server.admin_ids: invalid SPIFFE ID "example.org/admin"`}},
		{"key set twice", withServer(base + `    data_dir = "e"`),
			[]string{`server.conf:4: server.data_dir: set more than once (first at line 3; keep one)`}},
		{"both svid ttl spellings", withServer(base + "    default_svid_ttl = \"1h\"\n    default_x509_svid_ttl = \"1h\""),
			[]string{`server.default_svid_ttl: set together with default_x509_svid_ttl`}},
		{"syntax error", "server {\n  trust_domain = \"example.org\n}\n",
			[]string{`server.conf:2: syntax error`}},
		{"unknown plugin type", withPlugins(base, "  UpstreamCA \"disk\" {}\n"),
			[]string{`server.conf:8: plugins.UpstreamCA: unknown plugin type (use one of DataStore, KeyManager, NodeAttestor, UpstreamAuthority`}},
		{"two datastores", withPlugins(base, "  DataStore \"other\" {}\n"),
			[]string{`server.conf:9: plugins: exactly one DataStore plugin may be enabled, found 2: "other" at line 8, "sql" at line 9`}},
		{"two plugins blocks", withServer(base) + "plugins {\n  Notifier \"x\" {}\n}\n",
			[]string{`server.conf:12: plugins: set more than once (first at line 7; keep one)`}},
		{"no keymanager", "server {\n" + base + "}\nplugins {\n  DataStore \"sql\" {}\n  NodeAttestor \"join_token\" {}\n}\n",
			[]string{`server.conf:5: plugins: exactly one KeyManager plugin must be enabled, found 0`}},
		{"two upstream authorities", withPlugins(base, "  UpstreamAuthority \"disk\" {}\n  UpstreamAuthority \"spire\" {}\n"),
			[]string{`plugins: at most one UpstreamAuthority plugin may be enabled, found 2`}},
		{"no node attestor", "server {\n" + base + "}\nplugins {\n  DataStore \"sql\" {}\n  KeyManager \"memory\" {}\n  NodeAttestor \"join_token\" { enabled = false }\n}\n",
			[]string{`at least one NodeAttestor plugin must be enabled, found 0`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("server.conf", []byte(tc.text), false)
			if err == nil {
				t.Fatalf("no error; config %+v", c)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error:\n%v\ndoes not contain:\n%s", err, w)
				}
			}
			var e *hclconf.Error
			if !errors.As(err, &e) || e.File != "server.conf" {
				t.Errorf("error is not a *hclconf.Error naming the file: %#v", err)
			}
		})
	}
}

func TestAllErrorsAtOnce(t *testing.T) {
	_, err := Parse("server.conf", []byte(withServer(`
    ca_ttl = "7d"
    bind_port = "x"
    bogus = 1`)), false)
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	// Sorted by line; missing values (no line) last.
	want := []string{"server.conf:3: server.ca_ttl", "server.conf:4: server.bind_port", "server.conf:5: server.bogus",
		"server.conf: server.trust_domain is required", "server.conf: server.data_dir is required"}
	if len(lines) != len(want) {
		t.Fatalf("got %d errors:\n%v", len(lines), err)
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("error %d = %q, want prefix %q", i, lines[i], want[i])
		}
	}
}

func TestKnownButUnimplemented(t *testing.T) {
	c, err := Parse("server.conf", []byte(withServer(`
    trust_domain = "example.org"
    data_dir = "d"
    audit_log_enabled = true
    cache_reload_interval = "5s"
    profiling_enabled = true
    profiling_port = 6060
    profiling_freq = 10
    experimental {
        events_based_cache = true
    }
    ratelimit {
        attestation = false
    }
    federation {
        bundle_endpoint {
            address = "0.0.0.0"
            port = 8443
        }
        federates_with "domain.test" {
            bundle_endpoint_url = "https://1.2.3.4:8443"
            bundle_endpoint_profile "https_spiffe" {
                endpoint_spiffe_id = "spiffe://domain.test/beserver"
            }
        }
    }
    default_svid_ttl = "2h"`)+`
telemetry {
    Prometheus {
        port = 9988
    }
    Statsd = [
        { address = "localhost:8125" },
    ]
}
`), false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.DefaultX509SVIDTTL != 2*time.Hour {
		t.Errorf("default_svid_ttl not applied: %v", c.Server.DefaultX509SVIDTTL)
	}
	if c.Server.ProfilingPort != 6060 {
		t.Errorf("profiling port = %d, want 6060", c.Server.ProfilingPort)
	}
	if _, err := Parse("server.conf", []byte(withServer(`
    trust_domain = "example.org"
    data_dir = "d"
    profiling_enabled = true`)), false); err == nil || !strings.Contains(err.Error(), "server.profiling_enabled: set without profiling_port") {
		t.Errorf("profiling without a port: %v", err)
	}
	if p := c.Telemetry.Prometheus; p == nil || p.Host != "localhost" || p.Port != 9988 {
		t.Errorf("telemetry Prometheus = %+v, want localhost:9988", p)
	}
	if s := c.Telemetry.Statsd; len(s) != 1 || s[0].Address != "localhost:8125" {
		t.Errorf("telemetry Statsd = %+v, want localhost:8125", s)
	}
	all := strings.Join(c.Warnings, "\n")
	// cache_reload_interval is acted on: the events poller's interval.
	if c.Server.CacheReloadInterval != 5*time.Second || strings.Contains(all, "cache_reload_interval") {
		t.Errorf("cache_reload_interval = %v (warnings %q), want 5s without a warning", c.Server.CacheReloadInterval, all)
	}
	for _, key := range []string{"server.profiling_freq",
		"server.experimental", "server.federation.bundle_endpoint: Bundle endpoint is configured but has no profile set",
		"server.default_svid_ttl: deprecated"} {
		if !strings.Contains(all, key) {
			t.Errorf("no warning for %s in:\n%s", key, all)
		}
	}
}

func TestExpandEnv(t *testing.T) {
	t.Setenv("SPIRE_TEST_TD", "env.example")
	t.Setenv("SPIRE_TEST_DIR", "/srv/spire")
	text := withServer(`trust_domain = "${SPIRE_TEST_TD}"
    data_dir = "$SPIRE_TEST_DIR/data"`)
	c, err := Parse("server.conf", []byte(text), true)
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.TrustDomain.Name() != "env.example" || c.Server.DataDir != "/srv/spire/data" {
		t.Errorf("expanded: %+v", c.Server)
	}
	if _, err := Parse("server.conf", []byte(text), false); err == nil {
		t.Error("unexpanded ${SPIRE_TEST_TD} accepted as a trust domain")
	}
}

func writeConf(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "server.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestFromRunArgs(t *testing.T) {
	path := writeConf(t, withServer(`trust_domain = "example.org"
    data_dir = "/file/dir"
    bind_port = "8081"
    log_level = "INFO"`))
	var stderr bytes.Buffer
	c, err := FromRunArgs([]string{"-config", path, "-bindAddress", "127.0.0.1", "-serverPort", "9090",
		"-socketPath", "/run/spire/api.sock", "-trustDomain", "flag.example", "-dataDir", "/flag/dir",
		"-logLevel", "debug", "-logFormat", "json", "-logFile", "/tmp/x.log"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Server
	if s.BindAddress != "127.0.0.1" || s.BindPort != 9090 || s.SocketPath != "/run/spire/api.sock" ||
		s.TrustDomain.Name() != "flag.example" || s.DataDir != "/flag/dir" || s.LogLevel != slog.LevelDebug ||
		s.LogFormat != "json" || s.LogFile != "/tmp/x.log" {
		t.Errorf("flags did not override: %+v", s)
	}

	// Flags not given leave the file's values alone.
	c, err = FromRunArgs([]string{"-config", path}, &stderr)
	if err != nil || c.Server.DataDir != "/file/dir" || c.Server.BindPort != 8081 {
		t.Errorf("file values: %+v %v", c, err)
	}

	// Flags supply what the file lacks.
	bare := writeConf(t, minimalPlugins)
	c, err = FromRunArgs([]string{"-config", bare, "-trustDomain", "example.org", "-dataDir", "/d"}, &stderr)
	if err != nil || c.Server.TrustDomain.Name() != "example.org" {
		t.Errorf("required from flags: %+v %v", c, err)
	}
	_, err = FromRunArgs([]string{"-config", bare, "-dataDir", "/d"}, &stderr)
	if err == nil || !strings.Contains(err.Error(), "server.trust_domain is required") {
		t.Errorf("missing trust domain: %v", err)
	}
}

func TestFromRunArgsErrors(t *testing.T) {
	path := writeConf(t, withServer(`trust_domain = "example.org"
    data_dir = "d"`))
	t.Setenv("SPIRE_TEST_PORT", "7070")
	envPath := writeConf(t, withServer(`trust_domain = "example.org"
    data_dir = "d"
    bind_port = "${SPIRE_TEST_PORT}"`))
	c, err := FromRunArgs([]string{"-config", envPath, "-expandEnv"}, &bytes.Buffer{})
	if err != nil || c.Server.BindPort != 7070 {
		t.Errorf("-expandEnv: %+v %v", c, err)
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad port flag", []string{"-config", path, "-serverPort", "99999"}, `flag -serverPort: invalid port "99999"`},
		{"bad trust domain flag", []string{"-config", path, "-trustDomain", "spiffe://"}, `flag -trustDomain: invalid trust domain`},
		{"bad log level flag", []string{"-config", path, "-logLevel", "chatty"}, `flag -logLevel: invalid log level "chatty"`},
		{"bad log format flag", []string{"-config", path, "-logFormat", "yaml"}, `flag -logFormat: invalid log format "yaml"`},
		{"missing file", []string{"-config", filepath.Join(t.TempDir(), "none.conf")}, `(pass -config with the path of server.conf)`},
		{"unknown flag", []string{"-config", path, "-registrationUDSPath", "/x"}, `flag provided but not defined`},
		{"stray argument", []string{"-config", path, "extra"}, `unexpected argument "extra"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FromRunArgs(tc.args, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}

	var stderr bytes.Buffer
	if _, err := FromRunArgs([]string{"-h"}, &stderr); !errors.Is(err, flag.ErrHelp) || !strings.Contains(stderr.String(), "-trustDomain") {
		t.Errorf("-h: %v, usage %q", err, stderr.String())
	}
}
