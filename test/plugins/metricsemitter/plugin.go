package main

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/hcl"
	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	metricsv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/hostservice/common/metrics/v1"
	notifierv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/notifier/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type config struct {
	Prefix  string `hcl:"prefix"`
	Hostile bool   `hcl:"hostile"`
}

// Plugin is the notifier. Use New.
type Plugin struct {
	notifierv1.UnimplementedNotifierServer
	configv1.UnimplementedConfigServer

	metrics metricsv1.MetricsServiceClient

	mu  sync.Mutex
	cfg *config
}

// New returns an unconfigured plugin.
func New() *Plugin { return &Plugin{} }

// BrokerHostServices implements pluginsdk.NeedsHostServices: without the
// Metrics host service the plugin has nothing to do.
func (p *Plugin) BrokerHostServices(broker pluginsdk.ServiceBroker) error {
	if !broker.BrokerClient(&p.metrics) {
		return errors.New("metricsemitter: the Metrics host service is required")
	}
	return nil
}

// Configure implements the Config service, and emits.
func (p *Plugin) Configure(ctx context.Context, req *configv1.ConfigureRequest) (*configv1.ConfigureResponse, error) {
	cfg := &config{}
	if err := hcl.Decode(cfg, req.GetHclConfiguration()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "metricsemitter: %v", err)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "metricsemitter"
	}
	p.mu.Lock()
	p.cfg = cfg
	p.mu.Unlock()
	if err := p.emit(ctx, "configure"); err != nil {
		return nil, err
	}
	return &configv1.ConfigureResponse{}, nil
}

// Notify implements the Notifier service, and emits.
func (p *Plugin) Notify(ctx context.Context, _ *notifierv1.NotifyRequest) (*notifierv1.NotifyResponse, error) {
	return &notifierv1.NotifyResponse{}, p.emit(ctx, "notify")
}

// NotifyAndAdvise implements the Notifier service, and emits.
func (p *Plugin) NotifyAndAdvise(ctx context.Context, _ *notifierv1.NotifyAndAdviseRequest) (*notifierv1.NotifyAndAdviseResponse, error) {
	return &notifierv1.NotifyAndAdviseResponse{}, p.emit(ctx, "notify")
}

func (p *Plugin) emit(ctx context.Context, method string) error {
	p.mu.Lock()
	cfg := p.cfg
	p.mu.Unlock()
	if cfg == nil {
		return status.Error(codes.FailedPrecondition, "not configured")
	}
	key := func(k string) []string { return []string{cfg.Prefix, k} }
	m := p.metrics
	calls := []func() error{
		func() error {
			_, err := m.IncrCounter(ctx, &metricsv1.IncrCounterRequest{Key: key("calls"), Val: 1, Labels: []*metricsv1.Label{{Name: "method", Value: method}}})
			return err
		},
		func() error {
			_, err := m.SetGauge(ctx, &metricsv1.SetGaugeRequest{Key: key("keys"), Val: 4})
			return err
		},
		func() error {
			_, err := m.AddSample(ctx, &metricsv1.AddSampleRequest{Key: key("size"), Val: 2.5})
			return err
		},
		func() error {
			_, err := m.MeasureSince(ctx, &metricsv1.MeasureSinceRequest{Key: key("latency"), Time: time.Now().Add(-time.Second).UnixNano()})
			return err
		},
		func() error {
			_, err := m.EmitKey(ctx, &metricsv1.EmitKeyRequest{Key: key("emitted"), Val: 7})
			return err
		},
	}
	if cfg.Hostile {
		calls = append(calls,
			func() error {
				_, err := m.AddSample(ctx, &metricsv1.AddSampleRequest{Key: key("quantiled"), Val: 1, Labels: []*metricsv1.Label{{Name: "quantile", Value: "0.5"}}})
				return err
			},
			func() error {
				_, err := m.IncrCounter(ctx, &metricsv1.IncrCounterRequest{Key: key("bad!name"), Val: 1})
				return err
			},
			func() error {
				_, err := m.IncrCounter(ctx, &metricsv1.IncrCounterRequest{Key: key("negative"), Val: -1})
				return err
			},
			func() error {
				_, err := m.SetGauge(ctx, &metricsv1.SetGaugeRequest{Key: key("calls"), Val: 1})
				return err
			},
		)
	}
	for _, c := range calls {
		if err := c(); err != nil {
			return status.Errorf(codes.Unavailable, "metricsemitter: emit: %v", err)
		}
	}
	return nil
}
