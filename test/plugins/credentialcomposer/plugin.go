package main

import (
	"context"
	"slices"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/spiffe-hw/spire-hw/test/plugins/internal/fault"
	credentialcomposerv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/credentialcomposer/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// The marks the plugin leaves, for tests to look for.
const (
	ComposedDNSSAN = "composed.test"
	ComposedClaim  = "composed"
)

// config is the plugin's HCL configuration: only the fault keys for now.
type config struct{}

// Plugin is the credential composer. Use New.
type Plugin struct {
	credentialcomposerv1.UnimplementedCredentialComposerServer
	configv1.UnimplementedConfigServer

	log hclog.Logger

	mu         sync.RWMutex
	configured bool
	faults     fault.Faults
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
	p.mu.Lock()
	p.configured, p.faults = true, faults
	p.mu.Unlock()
	p.log.Info("Configured", "dns_san", ComposedDNSSAN, "claim", ComposedClaim, "hang", faults.Hang, "crash", faults.Crash)
	return &configv1.ConfigureResponse{}, nil
}

// ComposeServerX509CA implements the CredentialComposer service: no change.
func (p *Plugin) ComposeServerX509CA(_ context.Context, req *credentialcomposerv1.ComposeServerX509CARequest) (*credentialcomposerv1.ComposeServerX509CAResponse, error) {
	if err := p.begin(req.GetAttributes() != nil); err != nil {
		return nil, err
	}
	return &credentialcomposerv1.ComposeServerX509CAResponse{Attributes: req.GetAttributes()}, nil
}

// ComposeServerX509SVID implements the CredentialComposer service: no change.
func (p *Plugin) ComposeServerX509SVID(_ context.Context, req *credentialcomposerv1.ComposeServerX509SVIDRequest) (*credentialcomposerv1.ComposeServerX509SVIDResponse, error) {
	if err := p.begin(req.GetAttributes() != nil); err != nil {
		return nil, err
	}
	return &credentialcomposerv1.ComposeServerX509SVIDResponse{Attributes: req.GetAttributes()}, nil
}

// ComposeAgentX509SVID implements the CredentialComposer service: no change.
func (p *Plugin) ComposeAgentX509SVID(_ context.Context, req *credentialcomposerv1.ComposeAgentX509SVIDRequest) (*credentialcomposerv1.ComposeAgentX509SVIDResponse, error) {
	if err := p.begin(req.GetAttributes() != nil); err != nil {
		return nil, err
	}
	return &credentialcomposerv1.ComposeAgentX509SVIDResponse{Attributes: req.GetAttributes()}, nil
}

// ComposeWorkloadX509SVID implements the CredentialComposer service: the
// given attributes plus the DNS SAN composed.test (once).
func (p *Plugin) ComposeWorkloadX509SVID(_ context.Context, req *credentialcomposerv1.ComposeWorkloadX509SVIDRequest) (*credentialcomposerv1.ComposeWorkloadX509SVIDResponse, error) {
	if err := p.begin(req.GetAttributes() != nil); err != nil {
		return nil, err
	}
	attrs := proto.Clone(req.GetAttributes()).(*credentialcomposerv1.X509SVIDAttributes)
	if !slices.Contains(attrs.DnsSans, ComposedDNSSAN) {
		attrs.DnsSans = append(attrs.DnsSans, ComposedDNSSAN)
	}
	return &credentialcomposerv1.ComposeWorkloadX509SVIDResponse{Attributes: attrs}, nil
}

// ComposeWorkloadJWTSVID implements the CredentialComposer service: the
// given claims plus "composed": true.
func (p *Plugin) ComposeWorkloadJWTSVID(_ context.Context, req *credentialcomposerv1.ComposeWorkloadJWTSVIDRequest) (*credentialcomposerv1.ComposeWorkloadJWTSVIDResponse, error) {
	if err := p.begin(req.GetAttributes() != nil); err != nil {
		return nil, err
	}
	attrs := proto.Clone(req.GetAttributes()).(*credentialcomposerv1.JWTSVIDAttributes)
	if attrs.Claims == nil {
		attrs.Claims = &structpb.Struct{}
	}
	if attrs.Claims.Fields == nil {
		attrs.Claims.Fields = map[string]*structpb.Value{}
	}
	attrs.Claims.Fields[ComposedClaim] = structpb.NewBoolValue(true)
	return &credentialcomposerv1.ComposeWorkloadJWTSVIDResponse{Attributes: attrs}, nil
}

// begin is the common start of every Compose call: configured, faults, and
// attributes present (SPIRE always sends them; without them there is
// nothing to hand back).
func (p *Plugin) begin(hasAttributes bool) error {
	p.mu.RLock()
	configured, faults := p.configured, p.faults
	p.mu.RUnlock()
	if !configured {
		return status.Error(codes.FailedPrecondition, "not configured")
	}
	faults.Serve()
	if !hasAttributes {
		return status.Error(codes.InvalidArgument, "attributes are required")
	}
	return nil
}
