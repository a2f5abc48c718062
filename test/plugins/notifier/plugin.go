package main

import (
	"context"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/spiffe-hw/spire-hw/test/plugins/bundlelog"
	"github.com/spiffe-hw/spire-hw/test/plugins/internal/fault"
	notifierv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/notifier/v1"
	"github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/types"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// config is the plugin's HCL configuration.
type config struct {
	Path string `hcl:"path"`
}

// settings is what Configure leaves for the events.
type settings struct {
	path   string
	faults fault.Faults
}

// Plugin is the notifier. Use New.
type Plugin struct {
	notifierv1.UnimplementedNotifierServer
	configv1.UnimplementedConfigServer

	log hclog.Logger

	mu  sync.RWMutex
	set *settings
}

// New returns an unconfigured plugin.
func New() *Plugin {
	return &Plugin{log: hclog.NewNullLogger()}
}

// SetLogger implements pluginsdk.NeedsLogger.
func (p *Plugin) SetLogger(log hclog.Logger) {
	p.log = log
}

// Configure implements the Config service.
func (p *Plugin) Configure(_ context.Context, req *configv1.ConfigureRequest) (*configv1.ConfigureResponse, error) {
	var cfg config
	faults, err := fault.Configure(req, &cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Path == "" {
		return nil, status.Error(codes.InvalidArgument, "path is required")
	}
	p.mu.Lock()
	p.set = &settings{path: cfg.Path, faults: faults}
	p.mu.Unlock()
	p.log.Info("Configured", "path", cfg.Path, "hang", faults.Hang, "crash", faults.Crash)
	return &configv1.ConfigureResponse{}, nil
}

// Notify implements the Notifier service.
func (p *Plugin) Notify(_ context.Context, req *notifierv1.NotifyRequest) (*notifierv1.NotifyResponse, error) {
	updated := req.GetBundleUpdated()
	if updated == nil {
		return nil, status.Error(codes.InvalidArgument, "unsupported event")
	}
	if err := p.record("updated", updated.GetBundle()); err != nil {
		return nil, err
	}
	return &notifierv1.NotifyResponse{}, nil
}

// NotifyAndAdvise implements the Notifier service.
func (p *Plugin) NotifyAndAdvise(_ context.Context, req *notifierv1.NotifyAndAdviseRequest) (*notifierv1.NotifyAndAdviseResponse, error) {
	loaded := req.GetBundleLoaded()
	if loaded == nil {
		return nil, status.Error(codes.InvalidArgument, "unsupported event")
	}
	if err := p.record("loaded", loaded.GetBundle()); err != nil {
		return nil, err
	}
	return &notifierv1.NotifyAndAdviseResponse{}, nil
}

func (p *Plugin) record(event string, bundle *types.Bundle) error {
	p.mu.RLock()
	set := p.set
	p.mu.RUnlock()
	if set == nil {
		return status.Error(codes.FailedPrecondition, "not configured")
	}
	set.faults.Serve()
	if bundle == nil {
		return status.Error(codes.InvalidArgument, "event has no bundle")
	}
	if err := bundlelog.Append(set.path, event, bundle); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	p.log.Debug("Recorded bundle event", "event", event, "trust_domain", bundle.GetTrustDomain(), "sequence_number", bundle.GetSequenceNumber())
	return nil
}
