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
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	"golang.org/x/sync/errgroup"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/healthz"
	"github.com/spiffe-hw/spire-hw/internal/daemondir"
	"github.com/spiffe-hw/spire-hw/logging"
	"github.com/spiffe-hw/spire-hw/plugin"
	pcatalog "github.com/spiffe-hw/spire-hw/plugin/catalog"
	"github.com/spiffe-hw/spire-hw/server/api"
	"github.com/spiffe-hw/spire-hw/server/ca"
	"github.com/spiffe-hw/spire-hw/server/ca/upstream"
	"github.com/spiffe-hw/spire-hw/server/catalog"
	"github.com/spiffe-hw/spire-hw/server/config"
	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/endpoints"
	"github.com/spiffe-hw/spire-hw/server/events"
	"github.com/spiffe-hw/spire-hw/server/hostservice"
	"github.com/spiffe-hw/spire-hw/server/keymanager"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	"github.com/spiffe-hw/spire-hw/server/notifier"
	"github.com/spiffe-hw/spire-hw/telemetry"
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
	// sinks emits SPIRE's metrics (nil without a telemetry sink).
	sinks     *telemetry.Metrics
	profiling *http.Server
	// identity serves the server's SVID to external plugins.
	identity *hostservice.IdentityProvider
	host     plugin.Host
	// bundles hands the bundle to Notifier and BundlePublisher plugins.
	bundles *notifier.Watcher
	// federation refreshes federated bundles and serves ours.
	federation *federationParts
	// events keeps the API's caches in step with the entry and node
	// events of every server sharing the database.
	events *events.Poller
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
	if err := daemondir.EnsureData(sc.DataDir, "server.data_dir", log); err != nil {
		return nil, fmt.Errorf("server: data_dir: %w", err)
	}
	if s.ds, err = s.openDataStore(ctx); err != nil {
		return nil, err
	}
	var reg *prometheus.Registry
	if cfg.Telemetry.Prometheus != nil {
		reg = telemetry.NewRegistry()
	}
	// SPIRE's metrics go to every sink of the telemetry block; a nil sink
	// set drops them.
	if s.sinks, err = telemetry.New(cfg.Telemetry, telemetry.Options{Service: telemetry.ServerService,
		TrustDomain: sc.TrustDomain.Name(), Registry: reg, Log: log.With("subsystem", "telemetry")}); err != nil {
		return nil, err
	}
	s.ds = datastore.WithMetrics(s.ds, s.sinks)
	// External plugins load before the server has an SVID; the identity
	// provider answers once it has one.
	s.identity = hostservice.NewIdentityProvider(sc.TrustDomain, s.ds)
	s.host = plugin.Host{
		TrustDomain: sc.TrustDomain,
		HostServices: []pluginsdk.ServiceServer{
			s.identity.Service(),
			hostservice.AgentStore(s.ds),
			plugin.MetricsService(s.sinks, log.With("subsystem", "plugin_metrics")),
		},
		Log: log.With("subsystem", "catalog"),
	}
	// Composers load once the host is set, so that they are configured
	// with the trust domain and get host services; the CA calls them from
	// its first CA certificate on.
	composers, err := catalog.CredentialComposers.BuildAll(ctx, cfg.EnabledPlugins(config.TypeCredentialComposer), s.deps())
	if err != nil {
		return nil, err
	}
	for _, c := range composers {
		s.closers = append(s.closers, c)
	}
	km, err := s.newKeyManager(ctx)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, km)
	up, err := s.newUpstream(ctx)
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
		Composers:   composers,
		Log:         log.With("subsystem", "ca"),
		Metrics:     s.sinks,
	})
	if err != nil {
		return nil, fmt.Errorf("server: CA: %w", err)
	}
	s.svid, err = newSVIDRotator(ctx, sc.TrustDomain, s.ca, s.sinks, log.With("subsystem", "svid"))
	if err != nil {
		return nil, err
	}
	s.identity.SetIdentity(s.svid.certificate)
	if s.bundles, err = s.newBundleWatcher(ctx); err != nil {
		return nil, err
	}
	attestors, err := s.newAttestors(ctx)
	if err != nil {
		return nil, err
	}
	if s.federation, err = s.newFederation(); err != nil {
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
		RateLimit:   api.RateLimits{Attestation: sc.RateLimit.Attestation, Signing: sc.RateLimit.Signing},
		AuditLog:    sc.AuditLogEnabled,
		LogLevel:    logging.LevelOf(log),
		Metrics:     s.sinks,
		Log:         log.With("subsystem", "api"),

		BundleRefresher:              s.federation.manager,
		MaxAttestedNodeInfoStaleness: sc.MaxAttestedNodeInfoStaleness,
		NoChangeNotices:              sc.NoChangeNotices,
	})
	s.events = events.New(events.Config{
		DataStore:      s.ds,
		Sink:           a,
		Interval:       sc.CacheReloadInterval,
		PruneOlderThan: sc.PruneEventsOlderThan,
		Metrics:        s.sinks,
		Log:            log.With("subsystem", "events"),
	})
	a.FollowEvents(s.events.Sync, s.events.Interval())
	if err := s.events.Start(ctx); err != nil {
		return nil, fmt.Errorf("server: load the entry cache: %w", err)
	}
	rpcMetrics := telemetry.NewRPC(s.sinks)
	if p := cfg.Telemetry.Prometheus; p != nil {
		if s.metrics, err = telemetry.Listen(*p, reg, log.With("subsystem", "telemetry")); err != nil {
			return nil, err
		}
		s.closers = append(s.closers, s.metrics)
	}
	s.endpoints, err = endpoints.New(endpoints.Config{
		TCPAddr:     net.JoinHostPort(sc.BindAddress, strconv.Itoa(sc.BindPort)),
		SocketPath:  sc.SocketPath,
		API:         a,
		Limits:      endpoints.Limits(sc.ConnectionLimits),
		Registry:    reg,
		Certificate: s.svid.certificate,
		Bundles:     newBundleSource(s.ds, sc.TrustDomain),
		TrustDomain: sc.TrustDomain,
		AdminIDs:    sc.AdminIDs,
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
	g.Go(func() error { return s.events.Run(ctx) })
	entries := newEntryPruner(s.ds, s.sinks, s.log.With("subsystem", "registration_manager"))
	g.Go(func() error { return entries.run(ctx) })
	if d := s.cfg.Server.PruneAttestedNodesExpiredFor; d != 0 {
		p := newNodePruner(s.ds, d, s.cfg.Server.PruneTOFUNodes, s.log.With("subsystem", "node_manager"))
		g.Go(func() error { return p.run(ctx) })
	}
	g.Go(func() error { return s.bundles.Run(ctx) })
	s.federation.run(ctx, g.Go)
	if s.health != nil {
		g.Go(func() error { return healthz.Serve(ctx, s.health, s.log, "health checks") })
	}
	if s.metrics != nil {
		g.Go(func() error { return s.metrics.Serve(ctx) })
	}
	g.Go(func() error { return s.sinks.Run(ctx) })
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
	// The last built first, as the agent closes its plugins.
	if err := pcatalog.Close(s.closers...); err != nil {
		s.log.Warn("Failed to close plugins", "error", err)
	}
	if s.ds != nil {
		s.ds.Close()
	}
}

// deps is what the catalog's rows get from the server; the datastore is
// set once it is open, for the node attestors that need it.
func (s *Server) deps() catalog.Deps {
	return catalog.Deps{Config: s.cfg, DataStore: s.ds, Log: s.log, Host: s.host}
}

// newBundleWatcher builds the Notifiers and BundlePublishers and tells the
// notifiers the bundle is loaded; as in SPIRE, a notifier that refuses it
// stops start-up.
func (s *Server) newBundleWatcher(ctx context.Context) (*notifier.Watcher, error) {
	ns, err := catalog.Notifiers.BuildAll(ctx, s.cfg.EnabledPlugins(config.TypeNotifier), s.deps())
	if err != nil {
		return nil, err
	}
	for _, n := range ns {
		s.closers = append(s.closers, n)
	}
	ps, err := catalog.BundlePublishers.BuildAll(ctx, s.cfg.EnabledPlugins(config.TypeBundlePublisher), s.deps())
	if err != nil {
		return nil, err
	}
	for _, p := range ps {
		s.closers = append(s.closers, p)
	}
	w := notifier.NewWatcher(s.ds, s.cfg.Server.TrustDomain, ns, ps, s.log.With("subsystem", "notifier"))
	if err := w.Start(ctx); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	return w, nil
}

// onlyPlugin is the enabled plugin of a type that takes at most one;
// server/config has already rejected a second one.
func onlyPlugin(cfg *config.Config, typ string) (hclconf.Plugin, bool) {
	ps := cfg.EnabledPlugins(typ)
	if len(ps) == 0 {
		return hclconf.Plugin{}, false
	}
	return ps[0], true
}

func (s *Server) openDataStore(ctx context.Context) (datastore.DataStore, error) {
	p, ok := onlyPlugin(s.cfg, config.TypeDataStore)
	if !ok {
		return nil, errors.New("server: no DataStore plugin configured")
	}
	return catalog.DataStores.Build(ctx, p, s.deps())
}

func (s *Server) newKeyManager(ctx context.Context) (keymanager.KeyManager, error) {
	p, ok := onlyPlugin(s.cfg, config.TypeKeyManager)
	if !ok {
		return nil, errors.New("server: no KeyManager plugin configured")
	}
	return catalog.KeyManagers.Build(ctx, p, s.deps())
}

// newUpstream returns nil without an UpstreamAuthority: the CA signs
// itself.
func (s *Server) newUpstream(ctx context.Context) (upstream.Authority, error) {
	p, ok := onlyPlugin(s.cfg, config.TypeUpstreamAuthority)
	if !ok {
		return nil, nil
	}
	return catalog.UpstreamAuthorities.Build(ctx, p, s.deps())
}

// newAttestors keys the node attestors by plugin name, which is the
// attestation type agents send, and hands them to close.
func (s *Server) newAttestors(ctx context.Context) (map[string]nodeattestor.Attestor, error) {
	ps := s.cfg.EnabledPlugins(config.TypeNodeAttestor)
	as, err := catalog.NodeAttestors.BuildAll(ctx, ps, s.deps())
	if err != nil {
		return nil, err
	}
	out := make(map[string]nodeattestor.Attestor, len(as))
	for i, a := range as {
		out[ps[i].Name] = a
		// No built-in verifier holds resources, but an external one is a
		// process; close skips values without Close.
		s.closers = append(s.closers, a)
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
