package oidcprovider

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
)

// SPIRE's defaults.
const (
	defaultPollInterval     = 10 * time.Second
	defaultFileSyncInterval = time.Minute
	defaultACMECacheDir     = "./.acme-cache"
	defaultHealthPort       = 8008
	defaultReadyPath        = "/ready"
	defaultLivePath         = "/live"
	defaultServingAddr      = ":443"
)

// Config is a parsed, validated oidc-discovery-provider configuration.
type Config struct {
	LogLevel  slog.Level
	LogFormat string
	LogPath   string
	// LogRequests logs every request at DEBUG.
	LogRequests bool
	// Domains are the host names requests must arrive under (Host or
	// X-Forwarded-Host), deduplicated, in the order given.
	Domains []string
	// SetKeyUse sets "use": "sig" on every key, for clients that need it.
	SetKeyUse bool
	// AllowInsecureScheme renders http:// URLs for requests that did not
	// arrive over TLS (insecure_addr, listen_socket_path).
	AllowInsecureScheme bool

	// Exactly one listener is set: InsecureAddr, ListenSocketPath,
	// ServingCertFile or ACME.
	InsecureAddr     string
	ListenSocketPath string
	ServingCertFile  *ServingCertFile
	ACME             *ACME

	// Exactly one key source is set.
	ServerAPI   *ServerAPI
	WorkloadAPI *WorkloadAPI
	File        *File

	// HealthChecks is nil unless the health_checks block is present.
	HealthChecks *HealthChecks

	// JWTIssuer and JWKSURI override the issuer and jwks_uri of the
	// discovery document; nil derives them from the request.
	JWTIssuer, JWKSURI *url.URL
	// ServerPathPrefix is prepended to both paths; "/" when unset.
	ServerPathPrefix string

	// Warnings are the configuration's warnings, for the daemon to log.
	Warnings []string
}

// ServingCertFile serves HTTPS with a certificate and key read from disk
// and re-read every FileSyncInterval when their files change.
type ServingCertFile struct {
	CertFilePath, KeyFilePath string
	Addr                      *net.TCPAddr
	FileSyncInterval          time.Duration
}

// ACME is SPIRE's acme block. It is parsed and validated as SPIRE does,
// but the provider refuses to start with it (see ErrACMEUnsupported).
type ACME struct {
	DirectoryURL, Email, CacheDir string
	ToSAccepted                   bool
}

// ServerAPI polls the SPIRE Server API (admin socket) for the bundle.
type ServerAPI struct {
	// Address is a gRPC target in the unix name system ("unix:///path").
	Address      string
	PollInterval time.Duration
}

// WorkloadAPI polls an agent's Workload API for the JWT bundles.
type WorkloadAPI struct {
	SocketPath   string
	TrustDomain  spiffeid.TrustDomain
	PollInterval time.Duration
}

// File polls a SPIFFE bundle file (JWKS with spiffe_* members).
type File struct {
	Path         string
	PollInterval time.Duration
}

// HealthChecks is the health_checks block: live and ready paths on their
// own listener.
type HealthChecks struct {
	BindPort            int
	LivePath, ReadyPath string
}

// LoadConfig reads and parses the configuration file at path; with
// expandEnv, $VAR and ${VAR} are replaced from the environment first.
func LoadConfig(path string, expandEnv bool) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("unable to load configuration: %w", err)
	}
	return ParseConfig(path, data, expandEnv)
}

// ParseConfig parses the text of a configuration file; name labels its
// errors. Every problem found is reported at once, each naming the key and
// the fix. Unknown keys are errors (SPIRE ignores them, which hides typos).
func ParseConfig(name string, data []byte, expandEnv bool) (*Config, error) {
	d := hclconf.NewDiagnostics(name)
	root := hclconf.Parse(d, data, expandEnv)
	if root == nil {
		return nil, d.Err()
	}
	c := &Config{LogLevel: slog.LevelInfo, LogFormat: hclconf.LogFormatText, ServerPathPrefix: "/"}
	root.Parse("log_level", func(v string) (err error) {
		c.LogLevel, err = hclconf.ParseLogLevel(v)
		return err
	})
	root.Parse("log_format", func(v string) (err error) {
		if v == "" {
			return nil
		}
		c.LogFormat, err = hclconf.ParseLogFormat(v)
		return err
	})
	root.String("log_path", &c.LogPath)
	root.Bool("log_requests", &c.LogRequests)
	root.Bool("set_key_use", &c.SetKeyUse)
	root.Bool("allow_insecure_scheme", &c.AllowInsecureScheme)
	root.String("insecure_addr", &c.InsecureAddr)
	root.String("listen_socket_path", &c.ListenSocketPath)

	var domains []string
	root.Strings("domains", &domains)
	c.Domains = dedupe(domains)
	if len(c.Domains) == 0 {
		root.Errorf("domains", "at least one domain must be configured (list the host names the provider is reached at, e.g. domains = [\"oidc.example.org\"])")
	}
	for _, dom := range c.Domains {
		if _, err := domainKey(dom); err != nil {
			root.Errorf("domains", "%v", err)
		}
	}

	c.ACME = parseACME(root)
	c.ServingCertFile = parseServingCertFile(root)
	c.ServerAPI = parseServerAPI(root)
	c.WorkloadAPI = parseWorkloadAPI(root)
	c.File = parseFile(root)
	c.HealthChecks = parseHealthChecks(root)
	parseExperimental(root, "experimental", "listen_named_pipe_name")

	root.Parse("jwt_issuer", func(v string) (err error) {
		c.JWTIssuer, err = parseIssuer(v)
		return err
	})
	root.Parse("jwks_uri", func(v string) error {
		u, err := url.Parse(v)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return fmt.Errorf("the jwks_uri setting could not be parsed: %q is not an absolute URL (write it as https://host/path)", v)
		}
		c.JWKSURI = u
		return nil
	})
	root.Parse("server_path_prefix", func(v string) error {
		if v == "" {
			return nil
		}
		if !strings.HasPrefix(v, "/") {
			return fmt.Errorf("must start with \"/\", got %q (e.g. \"/instance/1\")", v)
		}
		if _, err := url.JoinPath(v, "keys"); err != nil {
			return fmt.Errorf("invalid path %q: %v", v, err)
		}
		c.ServerPathPrefix = v
		return nil
	})
	root.Finish()

	c.validate(root)
	if d.HasErrors() {
		return nil, d.Err()
	}
	c.Warnings = d.Warnings()
	return c, nil
}

// validate checks the rules between keys, with SPIRE's messages.
func (c *Config) validate(root *hclconf.Section) {
	if c.ACME != nil && c.InsecureAddr != "" {
		root.Errorf("acme", "insecure_addr and the acme section are mutually exclusive")
	}
	conflicts := []struct {
		a, b   bool
		key    string
		reason string
	}{
		{c.ACME != nil, c.ServingCertFile != nil, "serving_cert_file", "acme and serving_cert_file are mutually exclusive"},
		{c.ACME != nil, c.ListenSocketPath != "", "listen_socket_path", "listen_socket_path and the acme section are mutually exclusive"},
		{c.ServingCertFile != nil, c.InsecureAddr != "", "insecure_addr", "serving_cert_file and insecure_addr are mutually exclusive"},
		{c.ServingCertFile != nil, c.ListenSocketPath != "", "listen_socket_path", "serving_cert_file and listen_socket_path are mutually exclusive"},
		{c.InsecureAddr != "", c.ListenSocketPath != "", "listen_socket_path", "insecure_addr and listen_socket_path are mutually exclusive"},
	}
	listeners := 0
	for _, l := range []bool{c.ACME != nil, c.ServingCertFile != nil, c.InsecureAddr != "", c.ListenSocketPath != ""} {
		if l {
			listeners++
		}
	}
	if listeners == 0 {
		root.Errorf("insecure_addr", "either acme, serving_cert_file, insecure_addr or listen_socket_path must be configured (add one)")
	}
	for _, cf := range conflicts {
		if cf.a && cf.b {
			root.Errorf(cf.key, "%s (keep one)", cf.reason)
			break
		}
	}
	sources := 0
	for _, s := range []bool{c.ServerAPI != nil, c.WorkloadAPI != nil, c.File != nil} {
		if s {
			sources++
		}
	}
	switch {
	case sources == 0:
		root.Errorf("server_api", "exactly one of the server_api, workload_api, or file sections must be configured (add one)")
	case sources > 1:
		root.Errorf("server_api", "the server_api, workload_api, and file sections are mutually exclusive (keep one)")
	}
	if c.AllowInsecureScheme && c.InsecureAddr == "" && c.ListenSocketPath == "" {
		c.warn(root, "allow_insecure_scheme", "only takes effect with insecure_addr or listen_socket_path; ignored")
	}
	if c.JWTIssuer != nil && c.JWKSURI == nil {
		c.warn(root, "jwt_issuer", "also sets the host and path of jwks_uri when jwks_uri is not set (as SPIRE does); set jwks_uri to choose it")
	}
}

func (c *Config) warn(root *hclconf.Section, key, msg string) {
	root.Diagnostics().Warnf(root.LineOf(key), root.Key(key), "%s", msg)
}

// parseIssuer applies SPIRE's checks to jwt_issuer.
func parseIssuer(v string) (*url.URL, error) {
	u, err := url.Parse(v)
	switch {
	case err != nil:
		return nil, fmt.Errorf("the jwt_issuer url could not be parsed: %v", err)
	case u.Scheme == "":
		return nil, fmt.Errorf("the jwt_issuer url must contain a scheme (write it as https://%s)", v)
	case u.Host == "":
		return nil, fmt.Errorf("the jwt_issuer url must contain a host (write it as https://host/path)")
	}
	return u, nil
}

func parseACME(root *hclconf.Section) *ACME {
	s := root.Block("acme")
	if s == nil {
		return nil
	}
	a := &ACME{CacheDir: defaultACMECacheDir}
	s.String("directory_url", &a.DirectoryURL)
	s.String("email", &a.Email)
	s.Bool("tos_accepted", &a.ToSAccepted)
	s.String("cache_dir", &a.CacheDir) // an explicit "" disables the cache, as in SPIRE
	s.Finish()
	switch {
	case !a.ToSAccepted:
		s.Errorf("tos_accepted", "tos_accepted must be set to true in the acme configuration section")
	case a.Email == "":
		s.Errorf("email", "email must be configured in the acme configuration section")
	}
	return a
}

func parseServingCertFile(root *hclconf.Section) *ServingCertFile {
	s := root.Block("serving_cert_file")
	if s == nil {
		return nil
	}
	f := &ServingCertFile{FileSyncInterval: defaultFileSyncInterval}
	s.String("cert_file_path", &f.CertFilePath)
	s.String("key_file_path", &f.KeyFilePath)
	addr := defaultServingAddr
	s.String("addr", &addr)
	if addr == "" {
		addr = defaultServingAddr
	}
	s.Parse("file_sync_interval", durationOr(&f.FileSyncInterval, defaultFileSyncInterval))
	s.Finish()
	if f.CertFilePath == "" {
		s.Errorf("cert_file_path", "cert_file_path must be configured in the serving_cert_file configuration section")
	}
	if f.KeyFilePath == "" {
		s.Errorf("key_file_path", "key_file_path must be configured in the serving_cert_file configuration section")
	}
	a, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		s.Errorf("addr", "invalid addr in the serving_cert_file configuration section: %v (use host:port, e.g. \":443\")", err)
	}
	f.Addr = a
	return f
}

func parseServerAPI(root *hclconf.Section) *ServerAPI {
	s := root.Block("server_api")
	if s == nil {
		return nil
	}
	a := &ServerAPI{PollInterval: defaultPollInterval}
	s.String("address", &a.Address)
	s.Parse("poll_interval", durationOr(&a.PollInterval, defaultPollInterval))
	parseExperimental(s, "experimental", "named_pipe_name")
	s.Finish()
	switch {
	case a.Address == "":
		s.Errorf("address", "address must be configured in the server_api configuration section (e.g. \"unix:///tmp/spire-server/private/api.sock\")")
	case !strings.HasPrefix(a.Address, "unix:"):
		s.Errorf("address", "address must use the unix name system in the server_api configuration section (write \"unix://%s\")", a.Address)
	}
	return a
}

func parseWorkloadAPI(root *hclconf.Section) *WorkloadAPI {
	s := root.Block("workload_api")
	if s == nil {
		return nil
	}
	a := &WorkloadAPI{PollInterval: defaultPollInterval}
	s.String("socket_path", &a.SocketPath)
	var td string
	s.String("trust_domain", &td)
	s.Parse("poll_interval", durationOr(&a.PollInterval, defaultPollInterval))
	parseExperimental(s, "experimental", "named_pipe_name")
	s.Finish()
	if td == "" {
		s.Errorf("trust_domain", "trust_domain must be configured in the workload_api configuration section")
	} else if t, err := spiffeid.TrustDomainFromString(td); err != nil {
		s.Errorf("trust_domain", "invalid trust domain %q: %v", td, err)
	} else {
		a.TrustDomain = t
	}
	if a.SocketPath == "" {
		s.Errorf("socket_path", "socket_path must be configured in the workload_api configuration section")
	}
	return a
}

func parseFile(root *hclconf.Section) *File {
	s := root.Block("file")
	if s == nil {
		return nil
	}
	f := &File{PollInterval: defaultPollInterval}
	s.String("path", &f.Path)
	s.Parse("poll_interval", durationOr(&f.PollInterval, defaultPollInterval))
	s.Finish()
	if f.Path == "" {
		s.Errorf("path", "path must be configured in the file configuration section")
	}
	return f
}

func parseHealthChecks(root *hclconf.Section) *HealthChecks {
	s := root.Block("health_checks")
	if s == nil {
		return nil
	}
	h := &HealthChecks{BindPort: defaultHealthPort, LivePath: defaultLivePath, ReadyPath: defaultReadyPath}
	s.Port("bind_port", &h.BindPort)
	s.String("live_path", &h.LivePath)
	s.String("ready_path", &h.ReadyPath)
	s.Finish()
	// SPIRE's defaults for unset or zero values.
	if h.BindPort <= 0 {
		h.BindPort = defaultHealthPort
	}
	if h.LivePath == "" {
		h.LivePath = defaultLivePath
	}
	if h.ReadyPath == "" {
		h.ReadyPath = defaultReadyPath
	}
	for key, p := range map[string]string{"live_path": h.LivePath, "ready_path": h.ReadyPath} {
		if !strings.HasPrefix(p, "/") {
			s.Errorf(key, "invalid path %q (start it with \"/\")", p)
		}
	}
	if h.LivePath == h.ReadyPath {
		s.Errorf("ready_path", "same as live_path %q (give the two checks different paths)", h.LivePath)
	}
	return h
}

// parseExperimental reads an experimental block whose only key is a
// Windows named pipe, which this Unix-only build cannot serve.
func parseExperimental(parent *hclconf.Section, block, pipeKey string) {
	s := parent.Block(block)
	if s == nil {
		return
	}
	var pipe string
	if s.String(pipeKey, &pipe) && pipe != "" {
		s.Errorf(pipeKey, "named pipes are only supported on Windows (use a Unix socket path instead)")
	}
	s.Finish()
}

// durationOr parses a duration the way SPIRE does: a zero or negative one
// means the default.
func durationOr(dst *time.Duration, def time.Duration) func(string) error {
	return func(v string) error {
		if v == "" {
			*dst = def
			return nil
		}
		d, err := hclconf.ParseDuration(v)
		if err != nil {
			return err
		}
		if d <= 0 {
			d = def
		}
		*dst = d
		return nil
	}
}

func dedupe(items []string) []string {
	seen := make(map[string]bool, len(items))
	var out []string
	for _, s := range items {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
