package main

import (
	"context"

	"github.com/hashicorp/go-hclog"
	"github.com/spiffe-hw/spire-hw/test/plugins/internal/bundlefile"
	notifierv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/notifier/v1"
	"github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/types"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Plugin is the notifier. Use New.
type Plugin struct {
	notifierv1.UnimplementedNotifierServer
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
	if err := p.file.Append(event, bundle); err != nil {
		return err
	}
	p.log.Debug("Recorded bundle event", "event", event, "trust_domain", bundle.GetTrustDomain(), "sequence_number", bundle.GetSequenceNumber())
	return nil
}
