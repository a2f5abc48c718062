// Package server wires the SPIFFE server from its configuration: datastore,
// key manager, CA, node attestors, API and listeners. It is the one place
// that knows every subsystem; each of them knows only the interfaces it
// consumes.
package server

import (
	"context"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/healthz"
	"github.com/spiffe-hw/spire-hw/server/api"
	"github.com/spiffe-hw/spire-hw/server/ca"
	"github.com/spiffe-hw/spire-hw/server/ca/upstream"
	uppkcs11 "github.com/spiffe-hw/spire-hw/server/ca/upstream/pkcs11"
	"github.com/spiffe-hw/spire-hw/server/config"
	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore"
	"github.com/spiffe-hw/spire-hw/server/endpoints"
	"github.com/spiffe-hw/spire-hw/server/keymanager"
	"github.com/spiffe-hw/spire-hw/server/keymanager/disk"
	"github.com/spiffe-hw/spire-hw/server/keymanager/memory"
	kmpkcs11 "github.com/spiffe-hw/spire-hw/server/keymanager/pkcs11"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/awsiid"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/azuremsi"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/gcpiit"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/jointoken"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/k8spsat"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/sshpop"
	servertpm "github.com/spiffe-hw/spire-hw/server/nodeattestor/tpm"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/x509pop"
	"github.com/spiffe-hw/spire-hw/telemetry"
	"golang.org/x/sync/errgroup"
)

// Server is a configured, not yet running server.
type Server struct {
	cfg       *config.Config
	log       *slog.Logger
	ds        datastore.DataStore
	ca        *ca.Manager
	svid      *svidRotator
	endpoints *endpoints.Endpoints
	health    *http.Server
	metrics   *telemetry.Endpoint
	profiling *http.Server
	// closers are plugins that hold resources (HSM sessions); nil entries
	// and values without Close are skipped.
	closers []any
}

// New builds every subsystem and binds the listeners; Run serves.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (_ *Server, err error) {
	s := &Server{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	sc := cfg.Server
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	if err := os.MkdirAll(sc.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("server: create data_dir: %w", err)
	}
	if s.ds, err = openDataStore(ctx, cfg, log); err != nil {
		return nil, err
	}
	km, err := newKeyManager(cfg, log)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, km)
	up, err := newUpstream(cfg, log)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, up)
	caKeyType, err := keymanager.ParseKeyType(string(sc.CAKeyType))
	if err != nil {
		return nil, fmt.Errorf("server: ca_key_type: %w", err)
	}
	jwtKeyType, err := keymanager.ParseKeyType(string(sc.JWTKeyType))
	if err != nil {
		return nil, fmt.Errorf("server: jwt_key_type: %w", err)
	}
	s.ca, err = ca.New(ctx, ca.Config{
		TrustDomain: sc.TrustDomain,
		KeyManager:  km,
		Upstream:    up,
		Store:       s.ds,
		CATTL:       sc.CATTL,
		X509SVIDTTL: sc.DefaultX509SVIDTTL,
		JWTSVIDTTL:  sc.DefaultJWTSVIDTTL,
		CAKeyType:   caKeyType,
		JWTKeyType:  jwtKeyType,
		CASubject:   pkix.Name{Country: sc.CASubject.Country, Organization: sc.CASubject.Organization, CommonName: sc.CASubject.CommonName},
		JWTIssuer:   sc.JWTIssuer,
		Log:         log.With("subsystem", "ca"),
	})
	if err != nil {
		return nil, fmt.Errorf("server: CA: %w", err)
	}
	s.svid, err = newSVIDRotator(ctx, sc.TrustDomain, s.ca, log.With("subsystem", "svid"))
	if err != nil {
		return nil, err
	}
	attestors, err := newAttestors(cfg, s.ds)
	if err != nil {
		return nil, err
	}
	agentTTL := sc.AgentTTL
	a := api.New(api.Config{
		TrustDomain: sc.TrustDomain,
		DataStore:   s.ds,
		CA:          s.ca,
		Attestors:   attestors,
		AgentTTL:    agentTTL,
		AdminIDs:    sc.AdminIDs,
		ServerSVID:  s.svid.chain,
		Log:         log.With("subsystem", "api"),
	})
	var rpcMetrics *telemetry.RPC
	if p := cfg.Telemetry.Prometheus; p != nil {
		reg := telemetry.NewRegistry()
		rpcMetrics = telemetry.NewRPC(reg, "spire_server")
		if s.metrics, err = telemetry.Listen(*p, reg, log.With("subsystem", "telemetry")); err != nil {
			return nil, err
		}
		s.closers = append(s.closers, s.metrics)
	}
	s.endpoints, err = endpoints.New(endpoints.Config{
		TCPAddr:     net.JoinHostPort(sc.BindAddress, strconv.Itoa(sc.BindPort)),
		SocketPath:  sc.SocketPath,
		API:         a,
		Certificate: s.svid.certificate,
		Bundles:     newBundleSource(s.ds, sc.TrustDomain),
		Metrics:     rpcMetrics,
		Log:         log.With("subsystem", "endpoints"),
	})
	if err != nil {
		return nil, err
	}
	if hc := cfg.HealthChecks; hc.ListenerEnabled {
		s.health = healthz.New(hc, readiness(s.ds, km, up))
	}
	if sc.ProfilingPort != 0 {
		s.profiling = telemetry.ProfilingServer(sc.ProfilingPort)
	}
	return s, nil
}

// Run serves until ctx ends, then shuts everything down.
func (s *Server) Run(ctx context.Context) error {
	defer s.close()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.ca.Run(ctx) })
	g.Go(func() error { return s.svid.run(ctx) })
	g.Go(func() error { return s.endpoints.Serve(ctx) })
	g.Go(func() error { return pruneJoinTokens(ctx, s.ds, s.log) })
	if s.health != nil {
		g.Go(func() error { return healthz.Serve(ctx, s.health, s.log, "health checks") })
	}
	if s.metrics != nil {
		g.Go(func() error { return s.metrics.Serve(ctx) })
	}
	if s.profiling != nil {
		g.Go(func() error { return healthz.Serve(ctx, s.profiling, s.log, "pprof profiles (profiling_enabled)") })
	}
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// Addr is the bound agent address.
func (s *Server) Addr() net.Addr { return s.endpoints.TCPAddr() }

// MetricsAddr is the bound Prometheus address, or nil without telemetry.
func (s *Server) MetricsAddr() net.Addr {
	if s.metrics == nil {
		return nil
	}
	return s.metrics.Addr()
}

func (s *Server) close() {
	for _, c := range s.closers {
		if c, ok := c.(interface{ Close() error }); ok && c != nil {
			if err := c.Close(); err != nil {
				s.log.Warn("Failed to close plugin", "error", err)
			}
		}
	}
	if s.ds != nil {
		s.ds.Close()
	}
}

func onlyPlugin(cfg *config.Config, typ string) (hclconf.Plugin, bool) {
	ps := hclconf.EnabledPlugins(cfg.Plugins, typ)
	if len(ps) == 0 {
		return hclconf.Plugin{}, false
	}
	return ps[0], true
}

func openDataStore(ctx context.Context, cfg *config.Config, log *slog.Logger) (datastore.DataStore, error) {
	p, ok := onlyPlugin(cfg, "DataStore")
	if !ok {
		return nil, errors.New("server: no DataStore plugin configured")
	}
	if p.Name != "sql" {
		return nil, p.Errorf("", "unknown DataStore plugin %q (supported: sql)", p.Name)
	}
	var data struct {
		DatabaseType     string `hcl:"database_type"`
		ConnectionString string `hcl:"connection_string"`
		// Accepted for compatibility with SPIRE configs.
		ROConnectionString string `hcl:"ro_connection_string"`
		MaxOpenConns       int    `hcl:"max_open_conns"`
		MaxIdleConns       int    `hcl:"max_idle_conns"`
		ConnMaxLifetime    string `hcl:"conn_max_lifetime"`
		DisableMigration   bool   `hcl:"disable_migration"`
		LogSQL             bool   `hcl:"log_sql"`
	}
	if err := p.DecodeData(&data); err != nil {
		return nil, err
	}
	if data.DatabaseType == "" {
		return nil, p.Errorf("database_type", "is required (sqlite3 or postgres)")
	}
	if data.ConnectionString == "" {
		return nil, p.Errorf("connection_string", "is required")
	}
	ds, err := sqlstore.Open(ctx, sqlstore.Config{DatabaseType: data.DatabaseType, ConnectionString: data.ConnectionString, Log: log.With("subsystem", "datastore")})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	return ds, nil
}

func newKeyManager(cfg *config.Config, log *slog.Logger) (keymanager.KeyManager, error) {
	p, ok := onlyPlugin(cfg, "KeyManager")
	if !ok {
		return nil, errors.New("server: no KeyManager plugin configured")
	}
	switch p.Name {
	case "memory":
		var data struct{}
		if err := p.DecodeData(&data); err != nil {
			return nil, err
		}
		return memory.New(), nil
	case "disk":
		var data struct {
			KeysPath string `hcl:"keys_path"`
		}
		if err := p.DecodeData(&data); err != nil {
			return nil, err
		}
		if data.KeysPath == "" {
			return nil, p.Errorf("keys_path", "is required")
		}
		km, err := disk.New(data.KeysPath)
		if err != nil {
			return nil, fmt.Errorf("server: %s: %w", p.Label(), err)
		}
		return km, nil
	case "pkcs11":
		km, err := kmpkcs11.FromPlugin(p, log.With("subsystem", "keymanager"))
		if err != nil {
			return nil, err
		}
		return km, nil
	default:
		return nil, p.Errorf("", "unknown KeyManager plugin %q (supported: memory, disk, pkcs11)", p.Name)
	}
}

func newUpstream(cfg *config.Config, log *slog.Logger) (upstream.Authority, error) {
	p, ok := onlyPlugin(cfg, "UpstreamAuthority")
	if !ok {
		return nil, nil
	}
	switch p.Name {
	case "disk":
	case "pkcs11":
		u, err := uppkcs11.FromPlugin(p, log.With("subsystem", "upstream"))
		if err != nil {
			return nil, err
		}
		return u, nil
	default:
		return nil, p.Errorf("", "unknown UpstreamAuthority plugin %q (supported: disk, pkcs11)", p.Name)
	}
	var data struct {
		CertFilePath   string `hcl:"cert_file_path"`
		KeyFilePath    string `hcl:"key_file_path"`
		BundleFilePath string `hcl:"bundle_file_path"`
	}
	if err := p.DecodeData(&data); err != nil {
		return nil, err
	}
	if data.CertFilePath == "" || data.KeyFilePath == "" {
		return nil, p.Errorf("cert_file_path", "cert_file_path and key_file_path are required")
	}
	u, err := upstream.NewDisk(data.CertFilePath, data.KeyFilePath, data.BundleFilePath)
	if err != nil {
		return nil, fmt.Errorf("server: %s: %w", p.Label(), err)
	}
	return u, nil
}

func newAttestors(cfg *config.Config, ds datastore.DataStore) (map[string]nodeattestor.Attestor, error) {
	out := make(map[string]nodeattestor.Attestor)
	for _, p := range hclconf.EnabledPlugins(cfg.Plugins, "NodeAttestor") {
		switch p.Name {
		case jointoken.PluginName:
			var data struct{}
			if err := p.DecodeData(&data); err != nil {
				return nil, err
			}
			out[p.Name] = jointoken.New(cfg.Server.TrustDomain, ds, nil)
		case servertpm.PluginName:
			var data servertpm.PluginData
			if err := p.DecodeData(&data); err != nil {
				return nil, err
			}
			a, err := servertpm.NewFromPluginData(cfg.Server.TrustDomain, data, ds)
			if err != nil {
				return nil, p.Errorf("", "%v", err)
			}
			out[p.Name] = a
		case awsiid.PluginName:
			var data awsiid.PluginData
			if err := p.DecodeData(&data); err != nil {
				return nil, err
			}
			a, err := awsiid.NewFromPluginData(cfg.Server.TrustDomain, data, ds)
			if err != nil {
				return nil, p.Errorf("", "%v", err)
			}
			out[p.Name] = a
		case azuremsi.PluginName:
			var data azuremsi.PluginData
			if err := p.DecodeData(&data); err != nil {
				return nil, err
			}
			a, err := azuremsi.NewFromPluginData(cfg.Server.TrustDomain, data, ds)
			if err != nil {
				return nil, p.Errorf("", "%v", err)
			}
			out[p.Name] = a
		case gcpiit.PluginName:
			var data gcpiit.PluginData
			if err := p.DecodeData(&data); err != nil {
				return nil, err
			}
			a, err := gcpiit.NewFromPluginData(cfg.Server.TrustDomain, data, ds)
			if err != nil {
				return nil, p.Errorf("", "%v", err)
			}
			out[p.Name] = a
		case k8spsat.PluginName:
			var data k8spsat.PluginData
			if err := p.DecodeData(&data); err != nil {
				return nil, err
			}
			a, err := k8spsat.NewFromPluginData(cfg.Server.TrustDomain, data)
			if err != nil {
				return nil, p.Errorf("", "%v", err)
			}
			out[p.Name] = a
		case x509pop.PluginName:
			var data x509pop.PluginData
			if err := p.DecodeData(&data); err != nil {
				return nil, err
			}
			a, err := x509pop.NewFromPluginData(cfg.Server.TrustDomain, data)
			if err != nil {
				return nil, p.Errorf("", "%v", err)
			}
			out[p.Name] = a
		case sshpop.PluginName:
			var data sshpop.PluginData
			if err := p.DecodeData(&data); err != nil {
				return nil, err
			}
			a, err := sshpop.NewFromPluginData(cfg.Server.TrustDomain, data)
			if err != nil {
				return nil, p.Errorf("", "%v", err)
			}
			out[p.Name] = a
		default:
			return nil, p.Errorf("", "unknown NodeAttestor plugin %q (supported: join_token, tpm, aws_iid, azure_msi, gcp_iit, k8s_psat, x509pop, sshpop)", p.Name)
		}
	}
	return out, nil
}

func pruneJoinTokens(ctx context.Context, ds datastore.DataStore, log *slog.Logger) error {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := ds.PruneJoinTokens(ctx, time.Now()); err != nil && ctx.Err() == nil {
				log.Warn("Failed to prune expired join tokens", "error", err)
			}
		}
	}
}
