package main

import (
	"context"

	"github.com/hashicorp/go-hclog"
	"github.com/spiffe-hw/spire-hw/test/plugins/internal/bundlefile"
	bundlepublisherv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/bundlepublisher/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
)

// Plugin is the bundle publisher. Use New.
type Plugin struct {
	bundlepublisherv1.UnimplementedBundlePublisherServer
	configv1.UnimplementedConfigServer

	log  hclog.Logger
	file bundlefile.File
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
	path, faults, err := p.file.Configure(req)
	if err != nil {
		return nil, err
	}
	p.log.Info("Configured", "path", path, "hang", faults.Hang, "crash", faults.Crash)
	return &configv1.ConfigureResponse{}, nil
}

// PublishBundle implements the BundlePublisher service.
func (p *Plugin) PublishBundle(_ context.Context, req *bundlepublisherv1.PublishBundleRequest) (*bundlepublisherv1.PublishBundleResponse, error) {
	if err := p.file.Append("published", req.GetBundle()); err != nil {
		return nil, err
	}
	p.log.Debug("Published bundle", "trust_domain", req.GetBundle().GetTrustDomain(), "sequence_number", req.GetBundle().GetSequenceNumber())
	return &bundlepublisherv1.PublishBundleResponse{}, nil
}
