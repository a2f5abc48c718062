// Package agent wires the SPIFFE agent from its configuration: key manager,
// node attestor, the manager that talks to the server and keeps the SVID
// cache, the workload attestors and the Workload API. It is the one place
// that knows every agent subsystem.
package agent

import (
	"context"
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
	"google.golang.org/grpc"

	"github.com/spiffe-hw/spire-hw/agent/admin"
	"github.com/spiffe-hw/spire-hw/agent/admin/delegatedidentity"
	"github.com/spiffe-hw/spire-hw/agent/catalog"
	"github.com/spiffe-hw/spire-hw/agent/config"
	"github.com/spiffe-hw/spire-hw/agent/keymanager"
	"github.com/spiffe-hw/spire-hw/agent/manager"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor"
	"github.com/spiffe-hw/spire-hw/agent/sds"
	"github.com/spiffe-hw/spire-hw/agent/svidstore"
	"github.com/spiffe-hw/spire-hw/agent/workloadapi"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/lineage"
	"github.com/spiffe-hw/spire-hw/config/hclconf"
	tracer "github.com/spiffe-hw/spire-hw/ebpf/lineage"
	"github.com/spiffe-hw/spire-hw/healthz"
	"github.com/spiffe-hw/spire-hw/internal/daemondir"
	"github.com/spiffe-hw/spire-hw/internal/exepages"
	"github.com/spiffe-hw/spire-hw/logging"
	"github.com/spiffe-hw/spire-hw/plugin"
	pcatalog "github.com/spiffe-hw/spire-hw/plugin/catalog"
	"github.com/spiffe-hw/spire-hw/telemetry"
)

// Agent is a configured, not yet running agent.
type Agent struct {
	cfg     *config.Config
	log     *slog.Logger
	manager *manager.Manager
	handler *workloadapi.Handler
	// admin serves admin_socket_path, or is nil without one.
	admin   *admin.Config
	health  *http.Server
	metrics *telemetry.Endpoint
	rpc     *telemetry.RPC
	// sinks emits SPIRE's metrics (nil without a telemetry sink).
	sinks *telemetry.Metrics
	// reg is the Prometheus registry, or nil without telemetry.
	reg *prometheus.Registry
	// profiling serves pprof (profiling_enabled), or is nil.
	profiling *http.Server
	// plugins are every plugin built from the catalog, in build order.
	// Some hold resources (the eBPF tracer, an external plugin's process),
	// so Run closes them once nothing uses them.
	plugins []any
}

// New builds the agent. The manager loads its persisted SVIDs here, so the
// Workload API can serve them as soon as Run starts, before the server is
// reached.
func New(cfg *config.Config, log *slog.Logger) (a *Agent, err error) {
	started := time.Now()
	ac := cfg.Agent
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	if err := daemondir.EnsureData(ac.DataDir, "agent.data_dir", log); err != nil {
		return nil, fmt.Errorf("agent: data_dir: %w", err)
	}
	// A trust_bundle_path that cannot be read stops start-up, as before;
	// trust_bundle_url is fetched only when the agent needs it.
	trust, err := loadTrustBundle(ac)
	if err != nil {
		return nil, err
	}
	var bootstrap manager.BootstrapFunc
	if !ac.InsecureBootstrap {
		bootstrap = newBootstrapBundle(ac, log.With("subsystem", "trust_bundle_sources")).fetch
	}
	// Building a plugin may take a while (an external one is a process
	// to start), but New has no caller context to bound it yet.
	ctx := context.Background()
	var reg *prometheus.Registry
	if cfg.Telemetry.Prometheus != nil {
		reg = telemetry.NewRegistry()
	}
	// SPIRE's metrics go to every sink of the telemetry block, those of
	// external plugins too; a nil sink set drops them.
	sinks, err := telemetry.New(cfg.Telemetry, telemetry.Options{Service: telemetry.AgentService,
		TrustDomain: ac.TrustDomain.Name(), Registry: reg, Log: log.With("subsystem", "telemetry")})
	if err != nil {
		return nil, err
	}
	deps := catalog.Deps{Config: cfg, Log: log, Host: plugin.Host{
		TrustDomain: ac.TrustDomain,
		// SPIRE's agent offers its plugins the Metrics host service only.
		HostServices: []pluginsdk.ServiceServer{plugin.MetricsService(sinks, log.With("subsystem", "plugin_metrics"))},
		Log:          log.With("subsystem", "catalog"),
	}}
	var plugins []any
	defer func() {
		// Run closes them; a failed New has no Run.
		if err != nil {
			closePlugins(plugins, log)
		}
	}()
	km, err := newKeyManager(ctx, cfg, deps)
	if err != nil {
		return nil, err
	}
	plugins = append(plugins, km)
	na, err := newNodeAttestor(ctx, cfg, deps)
	if err != nil {
		return nil, err
	}
	plugins = append(plugins, na)
	warnUnprovenTPMKey(km, na, log)
	var metrics *telemetry.Endpoint
	rpc := telemetry.NewRPC(sinks)
	if p := cfg.Telemetry.Prometheus; p != nil {
		if metrics, err = telemetry.Listen(*p, reg, log.With("subsystem", "telemetry")); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				metrics.Close()
			}
		}()
	}
	attestors, err := catalog.WorkloadAttestors.BuildAll(ctx, cfg.EnabledPlugins(config.TypeWorkloadAttestor), deps)
	if err != nil {
		return nil, err
	}
	for _, at := range attestors {
		plugins = append(plugins, at)
	}
	if reg != nil {
		for _, at := range attestors {
			if l, ok := at.(*lineage.Attestor); ok && l.Tracer() != nil {
				reg.MustRegister(tracer.NewCollector(l.Tracer()))
			}
		}
	}
	stores, err := catalog.SVIDStores.BuildAll(ctx, cfg.EnabledPlugins(config.TypeSVIDStore), deps)
	if err != nil {
		return nil, err
	}
	storesByName := make(map[string]svidstore.Store, len(stores))
	for _, st := range stores {
		plugins = append(plugins, st)
		storesByName[st.Name()] = st
	}
	m, err := manager.New(manager.Config{
		TrustDomain:          ac.TrustDomain,
		ServerAddress:        net.JoinHostPort(ac.ServerAddress, strconv.Itoa(ac.ServerPort)),
		DataDir:              ac.DataDir,
		TrustBundle:          trust,
		BootstrapBundle:      bootstrap,
		InsecureBootstrap:    ac.InsecureBootstrap,
		BootstrapOnce:        ac.RetryBootstrap != nil && !*ac.RetryBootstrap,
		RebootstrapMode:      ac.RebootstrapMode,
		RebootstrapDelay:     ac.RebootstrapDelay,
		NodeAttestor:         na,
		KeyManager:           km,
		SyncInterval:         ac.SyncInterval,
		X509SVIDCacheMaxSize: ac.X509SVIDCacheMaxSize,
		JWTSVIDCacheMaxSize:  ac.JWTSVIDCacheMaxSize,
		DisableNotices:       ac.NoChangeNotices,
		SVIDStores:           storesByName,
		Log:                  log.With("subsystem", "manager"),
		Metrics:              sinks,
	})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a = &Agent{cfg: cfg, log: log, manager: m, plugins: plugins, metrics: metrics, rpc: rpc, reg: reg, sinks: sinks}
	a.handler = workloadapi.New(workloadapi.Config{
		Manager:     m,
		Attestors:   attestors,
		TrustDomain: ac.TrustDomain,
		Log:         log.With("subsystem", "workload_api"),
		Ready:       m.Ready,
		Metrics:     sinks,
	})
	if ac.AdminSocketPath != "" {
		a.admin = &admin.Config{
			SocketPath:  ac.AdminSocketPath,
			TrustDomain: ac.TrustDomain,
			Manager:     m,
			Uptime:      func() time.Duration { return time.Since(started) },
			LogLevel:    logging.LevelOf(log),
			Log:         log.With("subsystem", "admin_api"),
			// SPIRE serves it on every admin socket; with no
			// authorized_delegates every caller is refused.
			DelegatedIdentity: &delegatedidentity.Config{
				Manager: m, Cache: m.Cache(), Attestor: a.handler,
				AuthorizedDelegates: ac.AuthorizedDelegates,
				Log:                 log.With("subsystem", "delegated_identity_api"),
				Metrics:             sinks,
			},
		}
	}
	if hc := cfg.HealthChecks; hc.ListenerEnabled {
		a.health = healthz.New(hc, func(context.Context) error { return m.Ready() })
	}
	if ac.ProfilingPort != 0 {
		a.profiling = telemetry.ProfilingServer(ac.ProfilingPort)
	}
	return a, nil
}

// Run serves the Workload API and keeps the agent in sync until ctx ends
// or the agent can no longer act for its node (evicted, banned).
func (a *Agent) Run(ctx context.Context) error {
	defer func() {
		// The manager uses the key manager and the node attestor until it
		// is closed.
		a.manager.Close()
		closePlugins(a.plugins, a.log)
	}()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.manager.Run(ctx) })
	g.Go(func() error {
		select {
		case <-ctx.Done():
		case <-a.manager.Bootstrapped():
			releaseStartupPages(a.log)
		}
		return nil
	})
	var opts []grpc.ServerOption
	if a.sinks != nil {
		opts = append(opts, grpc.ChainUnaryInterceptor(a.rpc.Unary), grpc.ChainStreamInterceptor(a.rpc.Stream))
		g.Go(func() error { return a.sinks.Run(ctx) })
	}
	serve := workloadapi.ServeConfig{
		SocketPath: a.cfg.Agent.SocketPath,
		// The config block's fields are the listener's, in the same
		// order, so a field added to one and not the other fails here.
		Limits: workloadapi.Limits(a.cfg.Agent.WorkloadAPI),
		// Likewise the sds block's fields are SDS's settings.
		SDS: sds.Settings(a.cfg.Agent.SDS),
	}
	if a.reg != nil {
		// Not a nil *Registry in the interface: Serve would use it.
		serve.Metrics = a.reg
	}
	g.Go(func() error { return workloadapi.Serve(ctx, serve, a.handler, opts...) })
	if a.admin != nil {
		g.Go(func() error { return admin.Serve(ctx, *a.admin, opts...) })
	}
	if a.health != nil {
		g.Go(func() error { return healthz.Serve(ctx, a.health, a.log, "health checks") })
	}
	if a.metrics != nil {
		g.Go(func() error { return a.metrics.Serve(ctx) })
	}
	if a.profiling != nil {
		g.Go(func() error { return healthz.Serve(ctx, a.profiling, a.log, "pprof profiles (profiling_enabled)") })
	}
	a.log.Info("Agent started", "trust_domain", a.cfg.Agent.TrustDomain.Name(), "socket", a.cfg.Agent.SocketPath)
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// releaseStartupPages drops the binary's code and read-only data from the
// agent's memory once it has attested and synced (internal/exepages): start-up
// leaves nearly all of a 40 MiB binary resident, most of which the agent
// never runs again, and what it does run comes back from the page cache.
// A failure only leaves the pages where they were.
func releaseStartupPages(log *slog.Logger) {
	maps, err := exepages.Release()
	if err != nil {
		log.Debug("Binary's start-up pages kept", "error", err)
		return
	}
	var released int64
	for _, m := range maps {
		if m.Released {
			released += m.RSS
		}
	}
	log.Debug("Binary's start-up pages released from memory", "bytes", released)
}

// closePlugins closes what the catalog built, the last built first.
func closePlugins(plugins []any, log *slog.Logger) {
	if err := pcatalog.Close(plugins...); err != nil {
		log.Warn("Failed to close plugins", "error", err)
	}
}

// onlyPlugin is the enabled plugin of a type that takes exactly one;
// agent/config has already rejected a second one.
func onlyPlugin(cfg *config.Config, typ string) (hclconf.Plugin, error) {
	ps := cfg.EnabledPlugins(typ)
	if len(ps) == 0 {
		return hclconf.Plugin{}, fmt.Errorf("agent: no %s plugin configured", typ)
	}
	return ps[0], nil
}

func newKeyManager(ctx context.Context, cfg *config.Config, deps catalog.Deps) (keymanager.KeyManager, error) {
	p, err := onlyPlugin(cfg, config.TypeKeyManager)
	if err != nil {
		return nil, err
	}
	return catalog.KeyManagers.Build(ctx, p, deps)
}

func newNodeAttestor(ctx context.Context, cfg *config.Config, deps catalog.Deps) (nodeattestor.Attestor, error) {
	p, err := onlyPlugin(cfg, config.TypeNodeAttestor)
	if err != nil {
		return nil, err
	}
	return catalog.NodeAttestors.Build(ctx, p, deps)
}

// MetricsAddr is the bound Prometheus address, or nil without telemetry.
func (a *Agent) MetricsAddr() net.Addr {
	if a.metrics == nil {
		return nil
	}
	return a.metrics.Addr()
}

// warnUnprovenTPMKey warns when KeyManager "tpm" keeps the agent key in a
// TPM that the node attestor does not attest: the key is still resident,
// but the server gets no proof of it, so no tpm:agent_key:resident.
func warnUnprovenTPMKey(km keymanager.KeyManager, na nodeattestor.Attestor, log *slog.Logger) {
	type tpmPath interface{ TPMPath() string }
	k, ok := km.(tpmPath)
	if !ok {
		return
	}
	if n, ok := na.(tpmPath); ok && n.TPMPath() == k.TPMPath() {
		return
	}
	log.Warn("KeyManager \"tpm\" keeps the agent key in a TPM that the node attestor does not attest; the server gets no proof that the key is resident (use NodeAttestor \"tpm\" with the same tpm_path)",
		"key_manager_tpm_path", k.TPMPath(), "node_attestor", na.Type())
}
