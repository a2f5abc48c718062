package main

import (
	"context"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/spiffe-hw/spire-hw/test/plugins/bundlelog"
	"github.com/spiffe-hw/spire-hw/test/plugins/internal/fault"
	bundlepublisherv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/bundlepublisher/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// config is the plugin's HCL configuration.
type config struct {
	Path string `hcl:"path"`
}

// settings is what Configure leaves for PublishBundle.
type settings struct {
	path   string
	faults fault.Faults
}

// Plugin is the bundle publisher. Use New.
type Plugin struct {
	bundlepublisherv1.UnimplementedBundlePublisherServer
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

// PublishBundle implements the BundlePublisher service.
func (p *Plugin) PublishBundle(_ context.Context, req *bundlepublisherv1.PublishBundleRequest) (*bundlepublisherv1.PublishBundleResponse, error) {
	p.mu.RLock()
	set := p.set
	p.mu.RUnlock()
	if set == nil {
		return nil, status.Error(codes.FailedPrecondition, "not configured")
	}
	set.faults.Serve()
	if req.GetBundle() == nil {
		return nil, status.Error(codes.InvalidArgument, "missing bundle")
	}
	if err := bundlelog.Append(set.path, "published", req.GetBundle()); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	p.log.Debug("Published bundle", "trust_domain", req.GetBundle().GetTrustDomain(), "sequence_number", req.GetBundle().GetSequenceNumber())
	return &bundlepublisherv1.PublishBundleResponse{}, nil
}
