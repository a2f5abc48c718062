// Package config reads and validates the spire-agent configuration: the
// same HCL file (agent {}, plugins {}, health_checks {}) and the same
// `spire-agent run` flags as SPIRE, into a typed Config with defaults
// applied. Keys SPIRE knows but this agent does not implement are accepted
// and listed in Config.Warnings; anything else unknown is an error.
package config

import (
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
)

// Plugin is one plugin block; see hclconf.Plugin.
type Plugin = hclconf.Plugin

// HealthChecks is the health_checks block; see hclconf.HealthChecks.
type HealthChecks = hclconf.HealthChecks

// Telemetry is the telemetry block; see hclconf.Telemetry.
type Telemetry = hclconf.Telemetry

// Agent plugin types, as written in the plugins block.
const (
	TypeKeyManager       = "KeyManager"
	TypeNodeAttestor     = "NodeAttestor"
	TypeWorkloadAttestor = "WorkloadAttestor"
	TypeSVIDStore        = "SVIDStore"
)

// pluginRules are SPIRE's agent catalog rules.
var pluginRules = []hclconf.PluginRule{
	{Type: TypeKeyManager, Min: 1, Max: 1, Example: `KeyManager "disk" { plugin_data { directory = "./data/agent" } }`},
	{Type: TypeNodeAttestor, Min: 1, Max: 1, Example: `NodeAttestor "join_token" { plugin_data {} }`},
	{Type: TypeWorkloadAttestor, Min: 1, Max: -1, Example: `WorkloadAttestor "unix" { plugin_data {} }`},
	{Type: TypeSVIDStore, Min: 0, Max: -1},
}

// unimplementedBuiltins are SPIRE v1.13.3's built-in SVIDStores: external
// SVIDStores run here, these are not compiled in, so their blocks are
// skipped with a warning (hclconf.SkipUnimplemented).
var unimplementedBuiltins = map[string][]string{
	TypeSVIDStore: {"aws_secretsmanager", "gcp_secretmanager"},
}

// Formats of the initial trust bundle (trust_bundle_format).
const (
	TrustBundlePEM    = "pem"
	TrustBundleSPIFFE = "spiffe"
)

// Defaults, as documented by SPIRE.
const (
	DefaultConfigPath   = "conf/agent/agent.conf"
	DefaultServerPort   = 8081
	DefaultSocketPath   = "/tmp/spire-agent/public/api.sock"
	DefaultSyncInterval = 5 * time.Second
	// DefaultRebootstrapDelay is SPIRE's rebootstrap_delay.
	DefaultRebootstrapDelay = 10 * time.Minute
)

// Values of rebootstrap_mode, as SPIRE's.
const (
	RebootstrapNever  = "never"
	RebootstrapAuto   = "auto"
	RebootstrapAlways = "always"
)

// featureFlags are the experimental.feature_flags SPIRE v1.13.3 knows
// (pkg/common/fflag): only its test flag, which changes nothing. SPIRE
// refuses any other name, and so do we.
var featureFlags = map[string]bool{"i_am_a_test_flag": true}

// Config is a validated spire-agent configuration.
type Config struct {
	Agent        Agent
	HealthChecks HealthChecks
	Telemetry    Telemetry
	// Plugins in file order, disabled ones included (Enabled false).
	Plugins []Plugin
	// Warnings are for the caller to log: keys accepted but not acted on.
	Warnings []string
}

// Agent is the agent block.
type Agent struct {
	DataDir         string
	ServerAddress   string
	ServerPort      int
	SocketPath      string // Workload API socket
	AdminSocketPath string // optional admin API socket
	TrustDomain     spiffeid.TrustDomain

	// Exactly one way to trust the server on first contact: a bundle file,
	// a bundle URL, or (tests only) no verification at all.
	TrustBundlePath   string
	TrustBundleURL    string
	TrustBundleFormat string // TrustBundlePEM or TrustBundleSPIFFE
	InsecureBootstrap bool

	// TrustBundleUnixSocket, with an http:// TrustBundleURL, fetches the
	// bundle through this Unix socket (trust_bundle_unix_socket), from a
	// local service that knows how to get it.
	TrustBundleUnixSocket string

	// JoinToken is join_token, or the contents of JoinTokenFile
	// (join_token_file, -joinTokenFile), which validate reads.
	JoinToken     string
	JoinTokenFile string
	// RetryBootstrap is retry_bootstrap (-retryBootstrap); nil when not
	// set, which retries, as SPIRE's default does.
	RetryBootstrap *bool
	// RebootstrapMode is rebootstrap_mode: RebootstrapNever (the default),
	// RebootstrapAuto or RebootstrapAlways.
	RebootstrapMode string
	// RebootstrapDelay is rebootstrap_delay: how long the server must stay
	// untrusted by the agent's bundle before the agent bootstraps again.
	RebootstrapDelay time.Duration
	// FeatureFlags are experimental.feature_flags, all known to SPIRE.
	FeatureFlags []string

	LogLevel  slog.Level
	LogFormat string // hclconf.LogFormatText or hclconf.LogFormatJSON
	LogFile   string
	// SyncInterval is experimental.sync_interval: how often entries are synced.
	SyncInterval time.Duration
	// X509SVIDCacheMaxSize and JWTSVIDCacheMaxSize are SPIRE's
	// x509_svid_cache_max_size and jwt_svid_cache_max_size; zero means
	// SPIRE's default, 1000.
	X509SVIDCacheMaxSize int
	JWTSVIDCacheMaxSize  int
	// ProfilingPort, when not 0, serves net/http/pprof on localhost
	// (profiling_enabled with profiling_port).
	ProfilingPort int
	// NoChangeNotices is our change_notices = false: the agent does not
	// open our server's change-notice stream and only polls every
	// SyncInterval, as against SPIRE's server.
	NoChangeNotices bool
	// WorkloadAPI is our own connection_limits block, which bounds the
	// Workload API socket's connections (SPIRE has none).
	WorkloadAPI WorkloadAPILimits
	// SDS is the sds block: Envoy SDS v3 on the Workload API socket.
	SDS SDS
	// AuthorizedDelegates is authorized_delegates: the SPIFFE IDs whose
	// holders may use the Delegated Identity API on the admin socket.
	AuthorizedDelegates []spiffeid.ID
	// authorizedDelegates is the list as written, checked by validate
	// once the trust domain is known.
	authorizedDelegates []string
}

// WorkloadAPILimits is the agent block's connection_limits block (ours, not
// SPIRE's, named as the server's): zero values mean the agent's defaults
// (agent/workloadapi.Limits).
type WorkloadAPILimits struct {
	// MaxConnections is max_connections: connections open
	// at once, every caller together.
	MaxConnections int
	// MaxConnectionsPerUID is max_connections_per_uid.
	MaxConnectionsPerUID int
	// HandshakeTimeout is handshake_timeout: accept to the
	// end of the HTTP/2 preface.
	HandshakeTimeout time.Duration
	// IdleTimeout is idle_timeout: a connection with no open
	// RPC for this long is closed (the client reconnects on its next call).
	IdleTimeout time.Duration
}

// EnabledPlugins returns the enabled plugins of type typ, in file order.
func (c *Config) EnabledPlugins(typ string) []Plugin {
	return hclconf.EnabledPlugins(c.Plugins, typ)
}

// Load reads and validates the configuration file at path. With expandEnv,
// $VAR and ${VAR} are expanded from the environment first.
func Load(path string, expandEnv bool) (*Config, error) {
	data, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data, expandEnv)
}

func readConfig(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: read %s: %w (pass -config with the path of agent.conf)", path, err)
	}
	return data, nil
}

// Parse validates the configuration text data; filename is used in errors.
func Parse(filename string, data []byte, expandEnv bool) (*Config, error) {
	d := hclconf.NewDiagnostics(filename)
	c, set, ok := parse(d, data, expandEnv)
	if ok {
		c.validate(d, set)
	}
	if d.HasErrors() {
		return nil, d.Err()
	}
	c.Warnings = d.Warnings()
	return c, nil
}

// present records which values were given, by the file or a flag, so that
// a value present but invalid is not also reported as missing.
type present struct {
	trustDomain, dataDir, serverAddress bool
}

func defaults() *Config {
	return &Config{
		Agent: Agent{
			ServerPort:        DefaultServerPort,
			SocketPath:        DefaultSocketPath,
			TrustBundleFormat: TrustBundlePEM,
			RebootstrapMode:   RebootstrapNever,
			RebootstrapDelay:  DefaultRebootstrapDelay,
			LogLevel:          slog.LevelInfo,
			LogFormat:         hclconf.LogFormatText,
			SyncInterval:      DefaultSyncInterval,
			SDS:               defaultSDS(),
		},
		HealthChecks: hclconf.DefaultHealthChecks(),
	}
}

// parse reads the file into a Config with defaults, recording type errors;
// checks that depend on flags are left to validate. ok is false after a
// syntax error, when nothing more can be said about the file.
func parse(d *hclconf.Diagnostics, data []byte, expandEnv bool) (c *Config, set present, ok bool) {
	c = defaults()
	root := hclconf.Parse(d, data, expandEnv)
	if root == nil {
		return c, set, false
	}
	if s := root.Block("agent"); s != nil {
		set = c.Agent.parse(s)
	}
	c.HealthChecks = hclconf.ParseHealthChecks(root)
	c.Plugins = hclconf.ParsePlugins(root, pluginRules)
	hclconf.SkipUnimplemented(d, c.Plugins, unimplementedBuiltins)
	c.Telemetry = hclconf.ParseTelemetry(root)
	root.Finish()
	return c, set, true
}

func (a *Agent) parse(s *hclconf.Section) present {
	var set present
	s.String("data_dir", &a.DataDir)
	set.dataDir = s.Has("data_dir")
	s.String("server_address", &a.ServerAddress)
	set.serverAddress = s.Has("server_address")
	s.Parse("server_port", func(v string) (err error) { a.ServerPort, err = parseServerPort(v); return })
	s.String("socket_path", &a.SocketPath)
	s.String("admin_socket_path", &a.AdminSocketPath)
	s.Parse("trust_domain", func(v string) (err error) { a.TrustDomain, err = parseTrustDomain(v); return })
	set.trustDomain = s.Has("trust_domain")
	s.String("trust_bundle_path", &a.TrustBundlePath)
	s.String("trust_bundle_url", &a.TrustBundleURL)
	s.Parse("trust_bundle_format", func(v string) (err error) { a.TrustBundleFormat, err = parseBundleFormat(v); return })
	s.Bool("insecure_bootstrap", &a.InsecureBootstrap)
	s.String("trust_bundle_unix_socket", &a.TrustBundleUnixSocket)
	s.String("join_token", &a.JoinToken)
	s.String("join_token_file", &a.JoinTokenFile)
	var retry bool
	if s.Bool("retry_bootstrap", &retry) {
		a.RetryBootstrap = &retry
	}
	s.Parse("rebootstrap_mode", func(v string) (err error) { a.RebootstrapMode, err = parseRebootstrapMode(v); return })
	s.Duration("rebootstrap_delay", &a.RebootstrapDelay)
	s.Parse("log_level", func(v string) (err error) { a.LogLevel, err = hclconf.ParseLogLevel(v); return })
	s.Parse("log_format", func(v string) (err error) { a.LogFormat, err = hclconf.ParseLogFormat(v); return })
	s.String("log_file", &a.LogFile)

	if b := s.Block("connection_limits"); b != nil {
		a.WorkloadAPI.parse(b)
	}
	notices := true
	if s.Bool("change_notices", &notices) {
		a.NoChangeNotices = !notices
	}
	s.Strings("authorized_delegates", &a.authorizedDelegates)
	if b := s.Block("sds"); b != nil {
		a.SDS.parse(b)
	}
	if exp := s.Block("experimental"); exp != nil {
		var v time.Duration
		if exp.Duration("sync_interval", &v) {
			if v == 0 {
				exp.Errorf("sync_interval", "must be greater than zero (remove it to use the default of %v)", DefaultSyncInterval)
			} else {
				a.SyncInterval = v
			}
		}
		var flags []string
		if exp.Strings("feature_flags", &flags) {
			var bad []string
			for _, f := range flags {
				if !featureFlags[f] {
					bad = append(bad, f)
				}
			}
			if len(bad) > 0 {
				slices.Sort(bad)
				exp.Errorf("feature_flags", "unknown feature flag(s): %v (SPIRE v1.13.3 knows only i_am_a_test_flag)", bad)
			} else {
				a.FeatureFlags = flags
			}
		}
		for _, key := range []string{
			"named_pipe_name", "admin_named_pipe_name", "use_sync_authorized_entries",
			"require_pq_kem",
		} {
			exp.Ignore(key)
		}
		// Older SPIRE releases read these here; v1.13.3 has the sizes in
		// the agent block and the LRU cache always on.
		for _, key := range []string{"x509_svid_cache_max_size", "jwt_svid_cache_max_size"} {
			exp.IgnoreBecause(key, "SPIRE v1.13.3 reads it in the agent block, not in experimental")
		}
		exp.IgnoreBecause("disable_lru_cache", "SPIRE v1.13.3 has no such setting: the LRU SVID cache is always on")
		exp.Finish()
	}

	a.ProfilingPort = hclconf.ParseProfiling(s)
	for key, dst := range map[string]*int{
		"x509_svid_cache_max_size": &a.X509SVIDCacheMaxSize,
		"jwt_svid_cache_max_size":  &a.JWTSVIDCacheMaxSize,
	} {
		s.Parse(key, func(v string) error {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n < 0 {
				return fmt.Errorf("should not be negative: want a whole number, 0 for the default of 1000, got %q", v)
			}
			*dst = n
			return nil
		})
	}
	// Known to SPIRE, not implemented here.
	for _, key := range []string{
		"allowed_foreign_jwt_claims",
		"workload_x509_svid_key_type",
		"availability_target",
		"log_source_location", "allow_unauthenticated_verifiers",
	} {
		s.Ignore(key)
	}
	s.Finish()
	return set
}

// parse reads the connection_limits block. Each value must be positive: to
// keep the default, leave the key out.
func (w *WorkloadAPILimits) parse(b *hclconf.Section) {
	b.PositiveInt("max_connections", &w.MaxConnections)
	b.PositiveInt("max_connections_per_uid", &w.MaxConnectionsPerUID)
	b.PositiveDuration("handshake_timeout", &w.HandshakeTimeout)
	b.PositiveDuration("idle_timeout", &w.IdleTimeout)
	if w.MaxConnections > 0 && w.MaxConnectionsPerUID > w.MaxConnections {
		b.Errorf("max_connections_per_uid", "is %d, more than max_connections (%d); lower it so one user cannot take every connection",
			w.MaxConnectionsPerUID, w.MaxConnections)
	}
	b.Finish()
}

func parseRebootstrapMode(v string) (string, error) {
	switch m := strings.ToLower(strings.TrimSpace(v)); m {
	case RebootstrapNever, RebootstrapAuto, RebootstrapAlways:
		return m, nil
	case "":
		return RebootstrapNever, nil
	}
	return "", fmt.Errorf("unknown rebootstrap mode %q (use never, auto or always)", v)
}

func parseServerPort(v string) (int, error) {
	p, err := hclconf.ParsePort(v)
	if err != nil || p == 0 {
		return 0, fmt.Errorf("invalid port %q (use the server's port, a number from 1 to 65535)", v)
	}
	return p, nil
}

func parseTrustDomain(v string) (spiffeid.TrustDomain, error) {
	td, err := spiffeid.TrustDomainFromString(v)
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("invalid trust domain %q: %v (use a lower-case DNS-like name such as \"example.org\")", v, err)
	}
	return td, nil
}

func parseBundleFormat(v string) (string, error) {
	switch f := strings.ToLower(strings.TrimSpace(v)); f {
	case TrustBundlePEM, TrustBundleSPIFFE:
		return f, nil
	}
	return "", fmt.Errorf("invalid trust bundle format %q (use pem or spiffe)", v)
}

// validate checks what can only be known once flags are merged.
func (c *Config) validate(d *hclconf.Diagnostics, set present) {
	a := &c.Agent
	fix := func(key, flag string) string { return fmt.Sprintf("set %s in the agent block or pass -%s", key, flag) }
	if !set.dataDir || a.DataDir == "" {
		d.Missing("agent.data_dir", fix("data_dir", "dataDir"))
	}
	if !set.serverAddress || a.ServerAddress == "" {
		d.Missing("agent.server_address", fix("server_address", "serverAddress"))
	}
	if !set.trustDomain {
		d.Missing("agent.trust_domain", fix("trust_domain", "trustDomain"))
	}
	if a.SocketPath == "" {
		d.Missing("agent.socket_path", fix("socket_path", "socketPath"))
	}

	ways := 0
	for _, on := range []bool{a.TrustBundlePath != "", a.TrustBundleURL != "", a.InsecureBootstrap} {
		if on {
			ways++
		}
	}
	switch {
	case ways == 0:
		d.Missing("agent.trust_bundle_path",
			"set trust_bundle_path (or -trustBundle) to the server's CA bundle, or trust_bundle_url (or -trustBundleUrl); insecure_bootstrap = true is for tests only")
	case ways > 1:
		d.Errorf(0, "agent.trust_bundle_path", "trust_bundle_path, trust_bundle_url and insecure_bootstrap are exclusive (keep only one)")
	}
	c.validateTrustBundleURL(d)
	c.validateBootstrap(d)
	c.readJoinTokenFile(d)
	c.validateAuthorizedDelegates(d)
	if a.AdminSocketPath != "" && a.SocketPath != "" {
		wl := filepath.Dir(filepath.Clean(a.SocketPath))
		adm := filepath.Dir(filepath.Clean(a.AdminSocketPath))
		if rel, err := filepath.Rel(wl, adm); err == nil && (rel == "." || !strings.HasPrefix(rel, "..")) {
			d.Errorf(0, "agent.admin_socket_path", "%q is inside %q, the Workload API socket's directory, which workloads can reach (put it in a separate directory)",
				a.AdminSocketPath, wl)
		}
	}
}

// validateTrustBundleURL applies SPIRE's rules: https, unless the request
// goes through trust_bundle_unix_socket, where it is http and its query
// must leave the spire- and spiffe- parameters to the agent.
func (c *Config) validateTrustBundleURL(d *hclconf.Diagnostics) {
	a := &c.Agent
	if a.TrustBundleUnixSocket != "" && a.TrustBundleURL == "" {
		d.Errorf(0, "agent.trust_bundle_unix_socket", "set without trust_bundle_url (set the http:// URL to request through the socket, or remove it)")
	}
	if a.TrustBundleURL == "" {
		return
	}
	u, err := url.Parse(a.TrustBundleURL)
	switch {
	case err != nil || u.Host == "":
		d.Errorf(0, "agent.trust_bundle_url", "invalid URL %q (use an https:// URL)", a.TrustBundleURL)
	case a.TrustBundleUnixSocket != "" && u.Scheme != "http":
		d.Errorf(0, "agent.trust_bundle_url", "%q must start with http:// when used with trust_bundle_unix_socket", a.TrustBundleURL)
	case a.TrustBundleUnixSocket == "" && u.Scheme != "https":
		d.Errorf(0, "agent.trust_bundle_url", "%q must use https (the bundle anchors all trust in the server)", a.TrustBundleURL)
	case a.TrustBundleUnixSocket != "":
		for key := range u.Query() {
			if strings.HasPrefix(key, "spiffe-") || strings.HasPrefix(key, "spire-") {
				d.Errorf(0, "agent.trust_bundle_url", "query parameter %q must not start with spiffe- or spire- (the agent sets those)", key)
			}
		}
	}
}

// validateBootstrap applies SPIRE's rules on retry_bootstrap and
// rebootstrapping.
func (c *Config) validateBootstrap(d *hclconf.Diagnostics) {
	a := &c.Agent
	if a.RebootstrapMode != RebootstrapNever {
		if a.InsecureBootstrap {
			d.Errorf(0, "agent.rebootstrap_mode", "%q cannot be used with insecure_bootstrap (set trust_bundle_path or trust_bundle_url)", a.RebootstrapMode)
		}
		if a.RetryBootstrap != nil {
			d.Errorf(0, "agent.retry_bootstrap", "cannot be set when rebootstrap_mode is %q (remove retry_bootstrap)", a.RebootstrapMode)
		}
	}
	if a.RetryBootstrap != nil {
		d.Warnf(0, "agent.retry_bootstrap", "deprecated; SPIRE removes it in 1.14 (test without it before upgrading)")
	}
}

// readJoinTokenFile reads join_token_file as SPIRE does, when the agent's
// configuration is built: its trimmed contents are the join token.
func (c *Config) readJoinTokenFile(d *hclconf.Diagnostics) {
	a := &c.Agent
	if a.JoinTokenFile == "" {
		return
	}
	if a.JoinToken != "" {
		d.Errorf(0, "agent.join_token_file", "set together with join_token (keep only one)")
		return
	}
	data, err := os.ReadFile(a.JoinTokenFile)
	if err != nil {
		d.Errorf(0, "agent.join_token_file", "unable to read join token file: %v (fix the path or its permissions)", err)
		return
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		d.Errorf(0, "agent.join_token_file", "%s is empty (write the token that `spire-server token generate` printed)", a.JoinTokenFile)
		return
	}
	a.JoinToken = tok
}
