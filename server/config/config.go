// Package config reads and validates the spire-server configuration: the
// same HCL file (server {}, plugins {}, health_checks {}) and the same
// `spire-server run` flags as SPIRE, into a typed Config with defaults
// applied. Keys SPIRE knows but this server does not implement are accepted
// and listed in Config.Warnings; anything else unknown is an error.
package config

import (
	"fmt"
	"log/slog"
	"net/url"
	"os"
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

// Server plugin types, as written in the plugins block.
const (
	TypeDataStore          = "DataStore"
	TypeKeyManager         = "KeyManager"
	TypeNodeAttestor       = "NodeAttestor"
	TypeUpstreamAuthority  = "UpstreamAuthority"
	TypeNotifier           = "Notifier"
	TypeCredentialComposer = "CredentialComposer"
	TypeBundlePublisher    = "BundlePublisher"
)

// pluginRules are SPIRE's server catalog rules.
var pluginRules = []hclconf.PluginRule{
	{Type: TypeDataStore, Min: 1, Max: 1, Example: `DataStore "sql" { plugin_data { database_type = "sqlite3" connection_string = "./data/server/datastore.sqlite3" } }`},
	{Type: TypeKeyManager, Min: 1, Max: 1, Example: `KeyManager "disk" { plugin_data { keys_path = "./data/server/keys.json" } }`},
	{Type: TypeNodeAttestor, Min: 1, Max: -1, Example: `NodeAttestor "join_token" { plugin_data {} }`},
	{Type: TypeUpstreamAuthority, Min: 0, Max: 1},
	{Type: TypeNotifier, Min: 0, Max: -1},
	{Type: TypeCredentialComposer, Min: 0, Max: -1},
	{Type: TypeBundlePublisher, Min: 0, Max: -1},
}

// unimplementedBuiltins are SPIRE v1.13.3's built-in plugins of the types
// whose external plugins run here but whose built-ins are not compiled in:
// their blocks are skipped with a warning (hclconf.SkipUnimplemented).
var unimplementedBuiltins = map[string][]string{
	TypeNotifier:           {"gcs_bundle", "k8sbundle"},
	TypeBundlePublisher:    {"aws_s3", "gcp_cloudstorage", "aws_rolesanywhere_trustanchor", "k8s_configmap"},
	TypeCredentialComposer: {"uniqueid"},
}

// KeyType is an algorithm for CA and JWT signing keys, named as in SPIRE.
type KeyType string

// Key types accepted by ca_key_type and jwt_key_type.
const (
	KeyTypeECP256  KeyType = "ec-p256"
	KeyTypeECP384  KeyType = "ec-p384"
	KeyTypeRSA2048 KeyType = "rsa-2048"
	KeyTypeRSA4096 KeyType = "rsa-4096"
)

// ParseKeyType parses a key type name, case-insensitively.
func ParseKeyType(s string) (KeyType, error) {
	switch k := KeyType(strings.ToLower(strings.TrimSpace(s))); k {
	case KeyTypeECP256, KeyTypeECP384, KeyTypeRSA2048, KeyTypeRSA4096:
		return k, nil
	}
	return "", fmt.Errorf("invalid key type %q (use ec-p256, ec-p384, rsa-2048 or rsa-4096)", s)
}

// Config is a validated spire-server configuration.
type Config struct {
	Server       Server
	HealthChecks HealthChecks
	Telemetry    Telemetry
	// Plugins in file order, disabled ones included (Enabled false).
	Plugins []Plugin
	// Warnings are for the caller to log: keys accepted but not acted on.
	Warnings []string
}

// Server is the server block.
type Server struct {
	BindAddress string
	BindPort    int // 0 picks a free port
	SocketPath  string
	TrustDomain spiffeid.TrustDomain
	DataDir     string
	LogLevel    slog.Level
	LogFormat   string // hclconf.LogFormatText or hclconf.LogFormatJSON
	LogFile     string

	CATTL      time.Duration
	CAKeyType  KeyType
	JWTKeyType KeyType
	CASubject  CASubject

	DefaultX509SVIDTTL time.Duration
	DefaultJWTSVIDTTL  time.Duration
	JWTIssuer          string
	// AgentTTL is the lifetime of agent SVIDs; 0 means DefaultX509SVIDTTL.
	AgentTTL time.Duration
	AdminIDs []spiffeid.ID
	// ConnectionLimits bound the agent listener (our own block).
	ConnectionLimits ConnectionLimits

	// ProfilingPort, when not 0, serves net/http/pprof on localhost
	// (profiling_enabled with profiling_port).
	ProfilingPort int

	// RateLimit is the ratelimit block; both limits default to on.
	RateLimit RateLimit
	// AuditLogEnabled writes an audit line for every authorized API call
	// (audit_log_enabled).
	AuditLogEnabled bool

	// PruneAttestedNodesExpiredFor, when not 0, removes about hourly the
	// nodes whose agent SVID expired longer ago than this
	// (prune_attested_nodes_expired_for); banned nodes are kept, and so are
	// nodes that cannot re-attest unless PruneTOFUNodes (prune_tofu_nodes).
	PruneAttestedNodesExpiredFor time.Duration
	PruneTOFUNodes               bool
	// MaxAttestedNodeInfoStaleness is max_attested_node_info_staleness:
	// how long a node read to authenticate an agent is trusted; nil when
	// not set, which keeps the server's own cache window (30 s).
	MaxAttestedNodeInfoStaleness *time.Duration
	// CacheReloadInterval is cache_reload_interval: how often the server
	// reads the entry and node events that other servers sharing the
	// database wrote (0: server/events' default, a quarter second).
	CacheReloadInterval time.Duration
	// PruneEventsOlderThan is prune_events_older_than: events older than
	// this are deleted (0: SPIRE's default, 12 h).
	PruneEventsOlderThan time.Duration
	// NoChangeNotices is our change_notices = false: the server does not
	// offer the change-notice service (wire/push), so our agents get
	// Unimplemented, as from SPIRE's server, log it once and poll.
	NoChangeNotices bool

	// Federation is the federation block: the bundle endpoint and the
	// federates_with relationships.
	Federation Federation
}

// RateLimit is SPIRE's server { ratelimit {} } block: per source IP,
// attestation allows one AttestAgent call per second, signing 500 CSRs and
// 500 JWT-SVIDs per second. Callers on the admin socket are not limited.
type RateLimit struct {
	Attestation bool
	Signing     bool
}

// CASubject is the subject of CA certificates.
type CASubject struct {
	Country      []string
	Organization []string
	CommonName   string
}

// Defaults, as documented by SPIRE.
const (
	DefaultConfigPath  = "conf/server/server.conf"
	DefaultBindAddress = "0.0.0.0"
	DefaultBindPort    = 8081
	DefaultSocketPath  = "/tmp/spire-server/private/api.sock"
	DefaultCATTL       = 24 * time.Hour
	DefaultX509SVIDTTL = time.Hour
	DefaultJWTSVIDTTL  = 5 * time.Minute
	DefaultCAKeyType   = KeyTypeECP256
)

const (
	defaultCASubjectC = "US"
	defaultCASubjectO = "SPIFFE"
	serverFileFix     = "set %s in the server block or pass -%s"
	// SPIRE warns below this ratio: the CA rotates at half life, and an SVID
	// cannot outlive the CA that signed it.
	recommendedCATTLMult = 6
)

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
		return nil, fmt.Errorf("config: read %s: %w (pass -config with the path of server.conf)", path, err)
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

// present records which required values were given, by the file or a flag.
type present struct {
	trustDomain, dataDir bool
}

func defaults() *Config {
	return &Config{
		Server: Server{
			BindAddress:        DefaultBindAddress,
			BindPort:           DefaultBindPort,
			SocketPath:         DefaultSocketPath,
			LogLevel:           slog.LevelInfo,
			LogFormat:          hclconf.LogFormatText,
			CATTL:              DefaultCATTL,
			CAKeyType:          DefaultCAKeyType,
			CASubject:          CASubject{Country: []string{defaultCASubjectC}, Organization: []string{defaultCASubjectO}},
			DefaultX509SVIDTTL: DefaultX509SVIDTTL,
			DefaultJWTSVIDTTL:  DefaultJWTSVIDTTL,
			// SPIRE's defaults (cmd/spire-server/cli/run).
			RateLimit: RateLimit{Attestation: true, Signing: true},
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
	if s := root.Block("server"); s != nil {
		set = c.Server.parse(s)
	}
	c.HealthChecks = hclconf.ParseHealthChecks(root)
	c.Plugins = hclconf.ParsePlugins(root, pluginRules)
	hclconf.SkipUnimplemented(d, c.Plugins, unimplementedBuiltins)
	c.Telemetry = hclconf.ParseTelemetry(root)
	root.Finish()
	return c, set, true
}

func (srv *Server) parse(s *hclconf.Section) present {
	var set present
	s.String("bind_address", &srv.BindAddress)
	s.Port("bind_port", &srv.BindPort)
	s.String("socket_path", &srv.SocketPath)
	set.trustDomain = s.Parse("trust_domain", func(v string) error {
		td, err := parseTrustDomain(v)
		srv.TrustDomain = td
		return err
	})
	if s.Has("trust_domain") {
		set.trustDomain = true // present but invalid: already reported
	}
	set.dataDir = s.String("data_dir", &srv.DataDir) || s.Has("data_dir")
	s.Parse("log_level", func(v string) (err error) { srv.LogLevel, err = hclconf.ParseLogLevel(v); return })
	s.Parse("log_format", func(v string) (err error) { srv.LogFormat, err = hclconf.ParseLogFormat(v); return })
	s.String("log_file", &srv.LogFile)

	positive := func(key string, dst *time.Duration) {
		var v time.Duration
		if s.Duration(key, &v) {
			if v == 0 {
				s.Errorf(key, "must be greater than zero (remove it to use the default)")
				return
			}
			*dst = v
		}
	}
	positive("ca_ttl", &srv.CATTL)
	if s.Has("default_svid_ttl") && s.Has("default_x509_svid_ttl") {
		s.Errorf("default_svid_ttl", "set together with default_x509_svid_ttl (keep only default_x509_svid_ttl)")
	} else if s.Has("default_svid_ttl") {
		positive("default_svid_ttl", &srv.DefaultX509SVIDTTL)
		s.Diagnostics().Warnf(s.LineOf("default_svid_ttl"), s.Key("default_svid_ttl"), "deprecated; rename it to default_x509_svid_ttl")
	}
	positive("default_x509_svid_ttl", &srv.DefaultX509SVIDTTL)
	positive("default_jwt_svid_ttl", &srv.DefaultJWTSVIDTTL)
	s.Duration("agent_ttl", &srv.AgentTTL)

	s.Parse("ca_key_type", func(v string) (err error) { srv.CAKeyType, err = ParseKeyType(v); return })
	if !s.Parse("jwt_key_type", func(v string) (err error) { srv.JWTKeyType, err = ParseKeyType(v); return }) {
		// SPIRE: the JWT key type follows ca_key_type unless set on its own.
		srv.JWTKeyType = srv.CAKeyType
	}
	if sub := s.Block("ca_subject"); sub != nil {
		// A ca_subject block replaces the default subject as a whole.
		srv.CASubject = CASubject{}
		sub.Strings("country", &srv.CASubject.Country)
		sub.Strings("organization", &srv.CASubject.Organization)
		sub.String("common_name", &srv.CASubject.CommonName)
		sub.Finish()
	}
	s.Parse("jwt_issuer", func(v string) error {
		srv.JWTIssuer = v
		if u, err := url.Parse(v); err != nil || u.Scheme == "" || u.Host == "" {
			s.Diagnostics().Warnf(s.LineOf("jwt_issuer"), s.Key("jwt_issuer"),
				"%q is not an absolute URL; OIDC relying parties expect one such as \"https://oidc.example.org\"", v)
		}
		return nil
	})
	var ids []string
	if s.Strings("admin_ids", &ids) {
		for _, raw := range ids {
			id, err := spiffeid.FromString(raw)
			if err != nil {
				s.Errorf("admin_ids", "invalid SPIFFE ID %q: %v (write IDs such as \"spiffe://example.org/admin\")", raw, err)
				continue
			}
			srv.AdminIDs = append(srv.AdminIDs, id)
		}
	}

	srv.ProfilingPort = hclconf.ParseProfiling(s)
	srv.ConnectionLimits = parseConnectionLimits(s)
	if rl := s.Block("ratelimit"); rl != nil {
		rl.Bool("attestation", &srv.RateLimit.Attestation)
		rl.Bool("signing", &srv.RateLimit.Signing)
		rl.Finish()
	}
	s.Bool("audit_log_enabled", &srv.AuditLogEnabled)
	s.Duration("prune_attested_nodes_expired_for", &srv.PruneAttestedNodesExpiredFor)
	if s.Bool("prune_tofu_nodes", &srv.PruneTOFUNodes) && srv.PruneTOFUNodes && srv.PruneAttestedNodesExpiredFor == 0 {
		s.Diagnostics().Warnf(s.LineOf("prune_tofu_nodes"), s.Key("prune_tofu_nodes"),
			"has no effect without prune_attested_nodes_expired_for (set it to prune expired nodes)")
	}
	var staleness time.Duration
	if s.Duration("max_attested_node_info_staleness", &staleness) {
		srv.MaxAttestedNodeInfoStaleness = &staleness
	}
	for _, d := range []struct {
		key string
		v   *time.Duration
	}{{"cache_reload_interval", &srv.CacheReloadInterval}, {"prune_events_older_than", &srv.PruneEventsOlderThan}} {
		if s.Duration(d.key, d.v) && *d.v < 0 {
			s.Errorf(d.key, "must not be negative (write a duration such as \"1s\", or leave it out for the default)")
		}
	}
	notices := true
	if s.Bool("change_notices", &notices) {
		srv.NoChangeNotices = !notices
	}

	srv.Federation = parseFederation(s)

	// Known to SPIRE, not implemented here.
	for _, key := range []string{
		"experimental",
		"sql_transaction_timeout",
		"log_source_location", "use_legacy_downstream_x509_ca_ttl",
		"exclude_sn_from_ca_subject", "omit_x509svid_uid", "upstream_bundle",
		"tls_policy", "registration_uds_path",
	} {
		s.Ignore(key)
	}
	s.Finish()
	return set
}

func parseTrustDomain(v string) (spiffeid.TrustDomain, error) {
	td, err := spiffeid.TrustDomainFromString(v)
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("invalid trust domain %q: %v (use a lower-case DNS-like name such as \"example.org\")", v, err)
	}
	return td, nil
}

// validate checks what can only be known once flags are merged.
func (c *Config) validate(d *hclconf.Diagnostics, set present) {
	if !set.trustDomain {
		d.Missing("server.trust_domain", fmt.Sprintf(serverFileFix, "trust_domain", "trustDomain"))
	}
	if !set.dataDir || c.Server.DataDir == "" {
		d.Missing("server.data_dir", fmt.Sprintf(serverFileFix, "data_dir", "dataDir"))
	}
	if c.Server.SocketPath == "" {
		d.Missing("server.socket_path", fmt.Sprintf(serverFileFix, "socket_path", "socketPath"))
	}
	c.validateFederation(d)
	if c.Server.CATTL < recommendedCATTLMult*c.Server.DefaultX509SVIDTTL {
		d.Warnf(0, "server.ca_ttl", "%v is less than %d times default_x509_svid_ttl (%v); SVIDs will be cut short by CA rotation",
			c.Server.CATTL, recommendedCATTLMult, c.Server.DefaultX509SVIDTTL)
	}
}
