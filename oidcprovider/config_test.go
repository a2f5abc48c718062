package oidcprovider

import (
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

const minimal = `
domains = ["oidc.example.org"]
insecure_addr = ":8080"
server_api { address = "unix:///tmp/api.sock" }
`

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig("oidc.conf", []byte(minimal), false)
	if err != nil {
		t.Fatal(err)
	}
	if c.LogLevel.String() != "INFO" || c.LogFormat != "text" || c.ServerPathPrefix != "/" {
		t.Errorf("log %v %q prefix %q", c.LogLevel, c.LogFormat, c.ServerPathPrefix)
	}
	if c.ServerAPI.PollInterval != 10*time.Second || c.ServerAPI.Address != "unix:///tmp/api.sock" {
		t.Errorf("server_api %+v", c.ServerAPI)
	}
	if c.HealthChecks != nil || c.JWTIssuer != nil || c.SetKeyUse || c.AllowInsecureScheme {
		t.Errorf("unexpected settings: %+v", c)
	}
}

func TestParseConfigValues(t *testing.T) {
	c, err := ParseConfig("oidc.conf", []byte(`
log_level = "debug"
log_format = "JSON"
log_path = "/tmp/odp.log"
log_requests = true
domains = ["b.example", "a.example", "b.example"]
set_key_use = true
allow_insecure_scheme = true
listen_socket_path = "/tmp/odp.sock"
jwt_issuer = "https://issuer.example/td"
jwks_uri = "https://keys.example/jwks"
server_path_prefix = "/instance/1"
workload_api {
    socket_path = "/tmp/agent.sock"
    trust_domain = "example.org"
    poll_interval = "0s"
}
health_checks {
    bind_port = "9000"
    live_path = "/alive"
}
`), false)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Domains, ","); got != "b.example,a.example" {
		t.Errorf("domains %q, want deduplicated in order", got)
	}
	if c.LogLevel.String() != "DEBUG" || c.LogFormat != "json" || c.LogPath != "/tmp/odp.log" || !c.LogRequests || !c.SetKeyUse || !c.AllowInsecureScheme {
		t.Errorf("flags: %+v", c)
	}
	if c.WorkloadAPI.PollInterval != 10*time.Second {
		t.Errorf("poll_interval 0s gave %v, want SPIRE's default 10s", c.WorkloadAPI.PollInterval)
	}
	if c.WorkloadAPI.TrustDomain.Name() != "example.org" {
		t.Errorf("trust domain %v", c.WorkloadAPI.TrustDomain)
	}
	if *c.HealthChecks != (HealthChecks{BindPort: 9000, LivePath: "/alive", ReadyPath: "/ready"}) {
		t.Errorf("health_checks %+v", *c.HealthChecks)
	}
	if c.JWTIssuer.String() != "https://issuer.example/td" || c.JWKSURI.String() != "https://keys.example/jwks" || c.ServerPathPrefix != "/instance/1" {
		t.Errorf("urls %v %v %q", c.JWTIssuer, c.JWKSURI, c.ServerPathPrefix)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("warnings %q", c.Warnings)
	}
}

func TestParseConfigServingCertFile(t *testing.T) {
	c, err := ParseConfig("oidc.conf", []byte(`
domains = ["localhost"]
serving_cert_file {
    cert_file_path = "/c.pem"
    key_file_path = "/k.pem"
}
file { path = "/bundle.json" }
`), false)
	if err != nil {
		t.Fatal(err)
	}
	f := c.ServingCertFile
	want, _ := net.ResolveTCPAddr("tcp", ":443")
	if f.Addr.String() != want.String() || f.FileSyncInterval != time.Minute || f.CertFilePath != "/c.pem" || f.KeyFilePath != "/k.pem" {
		t.Errorf("serving_cert_file %+v", f)
	}
	if c.File.Path != "/bundle.json" || c.File.PollInterval != 10*time.Second {
		t.Errorf("file %+v", c.File)
	}
}

func TestParseConfigACME(t *testing.T) {
	c, err := ParseConfig("oidc.conf", []byte(`
domains = ["oidc.example.org"]
acme {
    email = "admin@example.org"
    tos_accepted = true
}
server_api { address = "unix:///tmp/api.sock" }
`), false)
	if err != nil {
		t.Fatal(err)
	}
	if c.ACME.CacheDir != "./.acme-cache" || c.ACME.Email != "admin@example.org" {
		t.Errorf("acme %+v", c.ACME)
	}
	if _, err := New(c, discard()); err != ErrACMEUnsupported {
		t.Fatalf("New with acme: %v, want ErrACMEUnsupported", err)
	}
	c, err = ParseConfig("oidc.conf", []byte(`
domains = ["oidc.example.org"]
acme {
    email = "admin@example.org"
    tos_accepted = true
    cache_dir = ""
}
server_api { address = "unix:///tmp/api.sock" }
`), false)
	if err != nil || c.ACME.CacheDir != "" {
		t.Fatalf("explicit empty cache_dir: %v %+v", err, c)
	}
}

func TestParseConfigWarnings(t *testing.T) {
	c, err := ParseConfig("oidc.conf", []byte(`
domains = ["localhost"]
allow_insecure_scheme = true
jwt_issuer = "https://issuer.example"
serving_cert_file {
    cert_file_path = "/c.pem"
    key_file_path = "/k.pem"
}
server_api { address = "unix:///tmp/api.sock" }
`), false)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(c.Warnings, "\n")
	for _, want := range []string{"oidc.conf:3: allow_insecure_scheme: only takes effect with insecure_addr or listen_socket_path", "oidc.conf:4: jwt_issuer: also sets the host and path of jwks_uri"} {
		if !strings.Contains(got, want) {
			t.Errorf("warnings %q lack %q", got, want)
		}
	}
}

func TestParseConfigExpandEnv(t *testing.T) {
	t.Setenv("ODP_DOMAIN", "env.example")
	c, err := ParseConfig("oidc.conf", []byte(strings.Replace(minimal, "oidc.example.org", "${ODP_DOMAIN}", 1)), true)
	if err != nil || c.Domains[0] != "env.example" {
		t.Fatalf("%v %v", err, c)
	}
}

// TestParseConfigErrors: each invalid configuration is refused with SPIRE's
// message (inside our file:line: key: prefix).
func TestParseConfigErrors(t *testing.T) {
	const src = `server_api { address = "unix:///tmp/api.sock" }`
	const lst = `insecure_addr = ":8080"`
	const dom = `domains = ["localhost"]`
	const scf = `serving_cert_file {
    cert_file_path = "/c.pem"
    key_file_path = "/k.pem"
}`
	const acme = `acme {
    email = "a@example.org"
    tos_accepted = true
}`
	for _, tc := range []struct {
		name, conf, want string
	}{
		{"no domains", lst + "\n" + src, "at least one domain must be configured"},
		{"empty domains", `domains = []` + "\n" + lst + "\n" + src, "at least one domain must be configured"},
		{"not punycode", `domains = ["bücher.example"]` + "\n" + lst + "\n" + src, `domain "bücher.example" must already be punycode encoded`},
		{"invalid domain", `domains = ["a b"]` + "\n" + lst + "\n" + src, `domain "a b" is not a valid domain name`},
		{"no listener", dom + "\n" + src, "either acme, serving_cert_file, insecure_addr or listen_socket_path must be configured"},
		{"insecure and socket", dom + "\n" + lst + "\nlisten_socket_path = \"/tmp/x.sock\"\n" + src, "insecure_addr and listen_socket_path are mutually exclusive"},
		{"cert and insecure", dom + "\n" + lst + "\n" + scf + "\n" + src, "serving_cert_file and insecure_addr are mutually exclusive"},
		{"cert and socket", dom + "\nlisten_socket_path = \"/tmp/x.sock\"\n" + scf + "\n" + src, "serving_cert_file and listen_socket_path are mutually exclusive"},
		{"acme and insecure", dom + "\n" + lst + "\n" + acme + "\n" + src, "insecure_addr and the acme section are mutually exclusive"},
		{"acme and cert", dom + "\n" + acme + "\n" + scf + "\n" + src, "acme and serving_cert_file are mutually exclusive"},
		{"acme and socket", dom + "\nlisten_socket_path = \"/tmp/x.sock\"\n" + acme + "\n" + src, "listen_socket_path and the acme section are mutually exclusive"},
		{"acme tos", dom + "\nacme { email = \"a@b\" }\n" + src, "tos_accepted must be set to true in the acme configuration section"},
		{"acme email", dom + "\nacme { tos_accepted = true }\n" + src, "email must be configured in the acme configuration section"},
		{"cert path", dom + "\nserving_cert_file { key_file_path = \"/k\" }\n" + src, "cert_file_path must be configured in the serving_cert_file configuration section"},
		{"key path", dom + "\nserving_cert_file { cert_file_path = \"/c\" }\n" + src, "key_file_path must be configured in the serving_cert_file configuration section"},
		{"cert addr", dom + "\nserving_cert_file {\ncert_file_path = \"/c\"\nkey_file_path = \"/k\"\naddr = \"nope\"\n}\n" + src, "invalid addr in the serving_cert_file configuration section"},
		{"sync interval", dom + "\nserving_cert_file {\ncert_file_path = \"/c\"\nkey_file_path = \"/k\"\nfile_sync_interval = \"1d\"\n}\n" + src, `serving_cert_file.file_sync_interval: invalid duration "1d"`},
		{"no source", dom + "\n" + lst, "exactly one of the server_api, workload_api, or file sections must be configured"},
		{"two sources", dom + "\n" + lst + "\n" + src + "\nfile { path = \"/b\" }", "the server_api, workload_api, and file sections are mutually exclusive"},
		{"server address", dom + "\n" + lst + "\nserver_api {}", "address must be configured in the server_api configuration section"},
		{"server unix", dom + "\n" + lst + "\nserver_api { address = \"127.0.0.1:8081\" }", "address must use the unix name system in the server_api configuration section"},
		{"server poll", dom + "\n" + lst + "\nserver_api {\naddress = \"unix:///a\"\npoll_interval = \"soon\"\n}", `server_api.poll_interval: invalid duration "soon"`},
		{"workload td", dom + "\n" + lst + "\nworkload_api { socket_path = \"/a\" }", "trust_domain must be configured in the workload_api configuration section"},
		{"workload td invalid", dom + "\n" + lst + "\nworkload_api {\nsocket_path = \"/a\"\ntrust_domain = \"Bad TD\"\n}", `invalid trust domain "Bad TD"`},
		{"workload socket", dom + "\n" + lst + "\nworkload_api { trust_domain = \"example.org\" }", "socket_path must be configured in the workload_api configuration section"},
		{"file path", dom + "\n" + lst + "\nfile {}", "path must be configured in the file configuration section"},
		{"issuer scheme", dom + "\n" + lst + "\n" + src + "\njwt_issuer = \"issuer.example\"", "the jwt_issuer url must contain a scheme"},
		{"issuer host", dom + "\n" + lst + "\n" + src + "\njwt_issuer = \"https:///path\"", "the jwt_issuer url must contain a host"},
		{"issuer parse", dom + "\n" + lst + "\n" + src + "\njwt_issuer = \"https://a b\"", "the jwt_issuer url could not be parsed"},
		{"jwks uri", dom + "\n" + lst + "\n" + src + "\njwks_uri = \"/keys\"", "the jwks_uri setting could not be parsed"},
		{"prefix", dom + "\n" + lst + "\n" + src + "\nserver_path_prefix = \"foo\"", `server_path_prefix: must start with "/"`},
		{"health paths", dom + "\n" + lst + "\n" + src + "\nhealth_checks {\nlive_path = \"/x\"\nready_path = \"/x\"\n}", "same as live_path"},
		{"health port", dom + "\n" + lst + "\n" + src + "\nhealth_checks { bind_port = \"http\" }", `health_checks.bind_port: invalid port "http"`},
		{"log level", dom + "\n" + lst + "\n" + src + "\nlog_level = \"loud\"", `log_level: invalid log level "loud"`},
		{"log format", dom + "\n" + lst + "\n" + src + "\nlog_format = \"xml\"", `log_format: invalid log format "xml"`},
		{"unknown key", dom + "\n" + lst + "\n" + src + "\nset_key_uses = true", `set_key_uses: unknown key (did you mean "set_key_use"?)`},
		{"named pipe", dom + "\n" + lst + "\n" + src + "\nexperimental { listen_named_pipe_name = \"odp\" }", "named pipes are only supported on Windows"},
		{"server pipe", dom + "\n" + lst + "\nserver_api {\naddress = \"unix:///a\"\nexperimental { named_pipe_name = \"x\" }\n}", "server_api.experimental.named_pipe_name: named pipes are only supported on Windows"},
		{"syntax", "domains = [", "syntax error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("oidc.conf", []byte(tc.conf), false)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "oidc.conf") {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	if _, err := LoadConfig(t.TempDir()+"/none.conf", false); err == nil || !strings.Contains(err.Error(), "unable to load configuration") {
		t.Fatalf("got %v", err)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
