package main

import (
	"context"
	"errors"
	"io"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/spiffe-hw/spire-hw/test/plugins/hmacnode"
	"github.com/spiffe-hw/spire-hw/test/plugins/internal/fault"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// config is the plugin's HCL configuration.
type config struct {
	NodeName string `hcl:"node_name"`
	Secret   string `hcl:"secret"`
}

// settings is what Configure leaves for AidAttestation.
type settings struct {
	payload []byte
	secret  []byte
	faults  fault.Faults
}

// Plugin is the agent node attestor. Use New.
type Plugin struct {
	nodeattestorv1.UnimplementedNodeAttestorServer
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
	switch {
	case cfg.NodeName == "":
		return nil, status.Error(codes.InvalidArgument, "node_name is required")
	case cfg.Secret == "":
		return nil, status.Error(codes.InvalidArgument, "secret is required")
	}
	payload, err := hmacnode.Payload{Node: cfg.NodeName}.Marshal()
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	p.mu.Lock()
	p.set = &settings{payload: payload, secret: []byte(cfg.Secret), faults: faults}
	p.mu.Unlock()
	p.log.Info("Configured", "node_name", cfg.NodeName, "hang", faults.Hang, "crash", faults.Crash)
	return &configv1.ConfigureResponse{}, nil
}

// AidAttestation implements the NodeAttestor service: the payload first,
// then one HMAC answer per challenge until the host closes its side.
func (p *Plugin) AidAttestation(stream nodeattestorv1.NodeAttestor_AidAttestationServer) error {
	p.mu.RLock()
	set := p.set
	p.mu.RUnlock()
	if set == nil {
		return status.Error(codes.FailedPrecondition, "not configured")
	}
	set.faults.Serve()

	if err := stream.Send(&nodeattestorv1.PayloadOrChallengeResponse{
		Data: &nodeattestorv1.PayloadOrChallengeResponse_Payload{Payload: set.payload},
	}); err != nil {
		return err
	}
	for {
		req, err := stream.Recv()
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return err
		}
		if len(req.GetChallenge()) == 0 {
			return status.Error(codes.InvalidArgument, "empty challenge")
		}
		if err := stream.Send(&nodeattestorv1.PayloadOrChallengeResponse{
			Data: &nodeattestorv1.PayloadOrChallengeResponse_ChallengeResponse{
				ChallengeResponse: hmacnode.Response(set.secret, set.payload, req.GetChallenge()),
			},
		}); err != nil {
			return err
		}
	}
}
