// Package agent wires the SPIFFE agent from its configuration: key manager,
// node attestor, the manager that talks to the server and keeps the SVID
// cache, the workload attestors and the Workload API. It is the one place
// that knows every agent subsystem.
package agent

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe-hw/spire-hw/agent/config"
	"github.com/spiffe-hw/spire-hw/agent/keymanager"
	"github.com/spiffe-hw/spire-hw/agent/keymanager/disk"
	"github.com/spiffe-hw/spire-hw/agent/keymanager/memory"
	"github.com/spiffe-hw/spire-hw/agent/manager"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor"
	agentawsiid "github.com/spiffe-hw/spire-hw/agent/nodeattestor/awsiid"
	agentazuremsi "github.com/spiffe-hw/spire-hw/agent/nodeattestor/azuremsi"
	agentgcpiit "github.com/spiffe-hw/spire-hw/agent/nodeattestor/gcpiit"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor/jointoken"
	agentpsat "github.com/spiffe-hw/spire-hw/agent/nodeattestor/k8spsat"
	agentsshpop "github.com/spiffe-hw/spire-hw/agent/nodeattestor/sshpop"
	agenttpm "github.com/spiffe-hw/spire-hw/agent/nodeattestor/tpm"
	agentx509pop "github.com/spiffe-hw/spire-hw/agent/nodeattestor/x509pop"
	"github.com/spiffe-hw/spire-hw/agent/workloadapi"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/lineage"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/unix"
	"github.com/spiffe-hw/spire-hw/config/hclconf"
	tracer "github.com/spiffe-hw/spire-hw/ebpf/lineage"
	"github.com/spiffe-hw/spire-hw/healthz"
	"github.com/spiffe-hw/spire-hw/telemetry"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
)

// Agent is a configured, not yet running agent.
type Agent struct {
	cfg     *config.Config
	log     *slog.Logger
	manager *manager.Manager
	handler *workloadapi.Handler
	health  *http.Server
	metrics *telemetry.Endpoint
	rpc     *telemetry.RPC
	// profiling serves pprof (profiling_enabled), or is nil.
	profiling *http.Server
	// attestors may hold kernel resources (the eBPF tracer).
	attestors []workloadapi.Attestor
}

// New builds the agent. The manager loads its persisted SVIDs here, so the
// Workload API can serve them as soon as Run starts, before the server is
// reached.
func New(cfg *config.Config, log *slog.Logger) (a *Agent, err error) {
	ac := cfg.Agent
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	if err := os.MkdirAll(ac.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: create data_dir: %w", err)
	}
	trust, err := loadTrustBundle(ac)
	if err != nil {
		return nil, err
	}
	km, err := newKeyManager(cfg)
	if err != nil {
		return nil, err
	}
	na, err := newNodeAttestor(cfg)
	if err != nil {
		return nil, err
	}
	var (
		reg     *prometheus.Registry
		metrics *telemetry.Endpoint
		rpc     *telemetry.RPC
	)
	if p := cfg.Telemetry.Prometheus; p != nil {
		reg = telemetry.NewRegistry()
		rpc = telemetry.NewRPC(reg, "spire_agent_workload_api")
		if metrics, err = telemetry.Listen(*p, reg, log.With("subsystem", "telemetry")); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				metrics.Close()
			}
		}()
	}
	attestors, err := newWorkloadAttestors(cfg, log)
	if err != nil {
		return nil, err
	}
	if reg != nil {
		for _, at := range attestors {
			if l, ok := at.(*lineage.Attestor); ok && l.Tracer() != nil {
				reg.MustRegister(tracer.NewCollector(l.Tracer()))
			}
		}
	}
	m, err := manager.New(manager.Config{
		TrustDomain:       ac.TrustDomain,
		ServerAddress:     net.JoinHostPort(ac.ServerAddress, strconv.Itoa(ac.ServerPort)),
		DataDir:           ac.DataDir,
		TrustBundle:       trust,
		InsecureBootstrap: ac.InsecureBootstrap,
		NodeAttestor:      na,
		KeyManager:        km,
		SyncInterval:      ac.SyncInterval,
		Log:               log.With("subsystem", "manager"),
	})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a = &Agent{cfg: cfg, log: log, manager: m, attestors: attestors, metrics: metrics, rpc: rpc}
	a.handler = workloadapi.New(workloadapi.Config{
		Manager:     m,
		Attestors:   attestors,
		TrustDomain: ac.TrustDomain,
		Log:         log.With("subsystem", "workload_api"),
	})
	if hc := cfg.HealthChecks; hc.ListenerEnabled {
		a.health = healthz.New(hc, func(context.Context) error { return nil })
	}
	if ac.ProfilingPort != 0 {
		a.profiling = telemetry.ProfilingServer(ac.ProfilingPort)
	}
	return a, nil
}

// Run serves the Workload API and keeps the agent in sync until ctx ends
// or the agent can no longer act for its node (evicted, banned).
func (a *Agent) Run(ctx context.Context) error {
	defer a.manager.Close()
	defer func() {
		for _, at := range a.attestors {
			if c, ok := at.(interface{ Close() error }); ok {
				c.Close()
			}
		}
	}()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.manager.Run(ctx) })
	var opts []grpc.ServerOption
	if a.rpc != nil {
		opts = append(opts, grpc.ChainUnaryInterceptor(a.rpc.Unary), grpc.ChainStreamInterceptor(a.rpc.Stream))
	}
	g.Go(func() error { return workloadapi.Serve(ctx, a.cfg.Agent.SocketPath, a.handler, opts...) })
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

func loadTrustBundle(ac config.Agent) ([]*x509.Certificate, error) {
	if ac.TrustBundlePath == "" {
		if ac.TrustBundleURL != "" {
			return nil, errors.New("agent: trust_bundle_url is not supported yet; download the bundle and set trust_bundle_path")
		}
		return nil, nil // insecure_bootstrap, checked by config
	}
	data, err := os.ReadFile(ac.TrustBundlePath)
	if err != nil {
		return nil, fmt.Errorf("agent: read trust_bundle_path: %w", err)
	}
	if ac.TrustBundleFormat == config.TrustBundleSPIFFE {
		b, err := spiffebundle.Parse(ac.TrustDomain, data)
		if err != nil {
			return nil, fmt.Errorf("agent: trust_bundle_path %s: %w", ac.TrustBundlePath, err)
		}
		return b.X509Authorities(), nil
	}
	var certs []*x509.Certificate
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("agent: trust_bundle_path %s: %w", ac.TrustBundlePath, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("agent: trust_bundle_path %s holds no PEM certificate (trust_bundle_format is %q)", ac.TrustBundlePath, ac.TrustBundleFormat)
	}
	return certs, nil
}

func onlyPlugin(cfg *config.Config, typ string) (hclconf.Plugin, error) {
	ps := cfg.EnabledPlugins(typ)
	if len(ps) == 0 {
		return hclconf.Plugin{}, fmt.Errorf("agent: no %s plugin configured", typ)
	}
	return ps[0], nil
}

func newKeyManager(cfg *config.Config) (keymanager.KeyManager, error) {
	p, err := onlyPlugin(cfg, config.TypeKeyManager)
	if err != nil {
		return nil, err
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
			Directory string `hcl:"directory"`
		}
		if err := p.DecodeData(&data); err != nil {
			return nil, err
		}
		if data.Directory == "" {
			return nil, p.Errorf("directory", "is required")
		}
		km, err := disk.New(data.Directory)
		if err != nil {
			return nil, fmt.Errorf("agent: %s: %w", p.Label(), err)
		}
		return km, nil
	default:
		return nil, p.Errorf("", "unknown KeyManager plugin %q (supported: memory, disk)", p.Name)
	}
}

func newNodeAttestor(cfg *config.Config) (nodeattestor.Attestor, error) {
	p, err := onlyPlugin(cfg, config.TypeNodeAttestor)
	if err != nil {
		return nil, err
	}
	switch p.Name {
	case jointoken.Type:
		var data struct{}
		if err := p.DecodeData(&data); err != nil {
			return nil, err
		}
		return jointoken.New(cfg.Agent.JoinToken), nil
	case agenttpm.Type:
		var data agenttpm.PluginData
		if err := p.DecodeData(&data); err != nil {
			return nil, err
		}
		a, err := agenttpm.New(data)
		if err != nil {
			return nil, p.Errorf("", "%v", err)
		}
		return a, nil
	case agentawsiid.Type:
		var data agentawsiid.PluginData
		if err := p.DecodeData(&data); err != nil {
			return nil, err
		}
		a, err := agentawsiid.New(data)
		if err != nil {
			return nil, p.Errorf("", "%v", err)
		}
		return a, nil
	case agentazuremsi.Type:
		var data agentazuremsi.PluginData
		if err := p.DecodeData(&data); err != nil {
			return nil, err
		}
		a, err := agentazuremsi.New(data)
		if err != nil {
			return nil, p.Errorf("", "%v", err)
		}
		return a, nil
	case agentgcpiit.Type:
		var data agentgcpiit.PluginData
		if err := p.DecodeData(&data); err != nil {
			return nil, err
		}
		a, err := agentgcpiit.New(data)
		if err != nil {
			return nil, p.Errorf("", "%v", err)
		}
		return a, nil
	case agentpsat.Type:
		var data agentpsat.PluginData
		if err := p.DecodeData(&data); err != nil {
			return nil, err
		}
		a, err := agentpsat.New(data)
		if err != nil {
			return nil, p.Errorf("", "%v", err)
		}
		return a, nil
	case agentx509pop.Type:
		var data agentx509pop.PluginData
		if err := p.DecodeData(&data); err != nil {
			return nil, err
		}
		a, err := agentx509pop.New(data)
		if err != nil {
			return nil, p.Errorf("", "%v", err)
		}
		return a, nil
	case agentsshpop.Type:
		var data agentsshpop.PluginData
		if err := p.DecodeData(&data); err != nil {
			return nil, err
		}
		a, err := agentsshpop.New(data)
		if err != nil {
			return nil, p.Errorf("", "%v", err)
		}
		return a, nil
	default:
		return nil, p.Errorf("", "unknown NodeAttestor plugin %q (supported: join_token, tpm, aws_iid, azure_msi, gcp_iit, k8s_psat, x509pop, sshpop)", p.Name)
	}
}

func newWorkloadAttestors(cfg *config.Config, log *slog.Logger) ([]workloadapi.Attestor, error) {
	var out []workloadapi.Attestor
	for _, p := range cfg.EnabledPlugins(config.TypeWorkloadAttestor) {
		switch p.Name {
		case unix.SelectorType:
			var data struct {
				DiscoverWorkloadPath bool  `hcl:"discover_workload_path"`
				WorkloadSizeLimit    int64 `hcl:"workload_size_limit"`
			}
			if err := p.DecodeData(&data); err != nil {
				return nil, err
			}
			out = append(out, unix.New(unix.Config{DiscoverWorkloadPath: data.DiscoverWorkloadPath, WorkloadSizeLimit: data.WorkloadSizeLimit}))
		case lineage.SelectorType:
			var data struct {
				DiscoverWorkloadPath bool   `hcl:"discover_workload_path"`
				WorkloadSizeLimit    int64  `hcl:"workload_size_limit"`
				MaxAncestors         int    `hcl:"max_ancestors"`
				GracePeriod          string `hcl:"grace_period"`
				MaxProcesses         int    `hcl:"max_processes"`
				DisableEBPF          bool   `hcl:"disable_ebpf"`
				// Groups change without a traced event, so reading them
				// costs a /proc read per call; this turns them off.
				SkipSupplementaryGroups bool `hcl:"skip_supplementary_groups"`
			}
			if err := p.DecodeData(&data); err != nil {
				return nil, err
			}
			var grace time.Duration
			if data.GracePeriod != "" {
				d, err := p.ParseDuration("grace_period", data.GracePeriod)
				if err != nil {
					return nil, err
				}
				grace = d
			}
			out = append(out, lineage.New(lineage.Config{
				DiscoverWorkloadPath: data.DiscoverWorkloadPath, WorkloadSizeLimit: data.WorkloadSizeLimit,
				MaxAncestors: data.MaxAncestors, GracePeriod: grace, MaxProcesses: data.MaxProcesses,
				DisableEBPF: data.DisableEBPF, SkipSupplementaryGroups: data.SkipSupplementaryGroups,
				Log: log.With("plugin", "lineage"),
			}))
		default:
			return nil, p.Errorf("", "unknown WorkloadAttestor plugin %q (supported: unix, lineage)", p.Name)
		}
	}
	return out, nil
}

// MetricsAddr is the bound Prometheus address, or nil without telemetry.
func (a *Agent) MetricsAddr() net.Addr {
	if a.metrics == nil {
		return nil
	}
	return a.metrics.Addr()
}
