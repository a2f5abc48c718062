package main

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/spiffe-hw/spire-hw/test/plugins/hmacnode"
	"github.com/spiffe-hw/spire-hw/test/plugins/internal/fault"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	agentstorev1 "github.com/spiffe/spire-plugin-sdk/proto/spire/hostservice/server/agentstore/v1"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// config is the plugin's HCL configuration.
type config struct {
	Secret        string `hcl:"secret"`
	UseAgentStore bool   `hcl:"use_agent_store"`
}

// settings is what Configure leaves for Attest.
type settings struct {
	trustDomain   spiffeid.TrustDomain
	secret        []byte
	useAgentStore bool
	faults        fault.Faults
}

// Plugin is the server node attestor. Use New.
type Plugin struct {
	nodeattestorv1.UnimplementedNodeAttestorServer
	configv1.UnimplementedConfigServer

	log        hclog.Logger
	agentStore agentstorev1.AgentStoreServiceClient

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

// BrokerHostServices implements pluginsdk.NeedsHostServices. It is called
// before Configure, so it cannot know whether use_agent_store will be set:
// it always asks for the AgentStore, and a host without one cannot load the
// plugin.
func (p *Plugin) BrokerHostServices(broker pluginsdk.ServiceBroker) error {
	if !broker.BrokerClient(&p.agentStore) {
		return errors.New("servernodeattestor: the AgentStore host service is required")
	}
	return nil
}

// Configure implements the Config service.
func (p *Plugin) Configure(_ context.Context, req *configv1.ConfigureRequest) (*configv1.ConfigureResponse, error) {
	var cfg config
	faults, err := fault.Configure(req, &cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Secret == "" {
		return nil, status.Error(codes.InvalidArgument, "secret is required")
	}
	td, err := spiffeid.TrustDomainFromString(req.GetCoreConfiguration().GetTrustDomain())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "core trust domain: %v", err)
	}
	p.mu.Lock()
	p.set = &settings{trustDomain: td, secret: []byte(cfg.Secret), useAgentStore: cfg.UseAgentStore, faults: faults}
	p.mu.Unlock()
	p.log.Info("Configured", "trust_domain", td.Name(), "use_agent_store", cfg.UseAgentStore, "hang", faults.Hang, "crash", faults.Crash)
	return &configv1.ConfigureResponse{}, nil
}

// Attest implements the NodeAttestor service: payload, one challenge, the
// answer, then the agent's attributes.
func (p *Plugin) Attest(stream nodeattestorv1.NodeAttestor_AttestServer) error {
	p.mu.RLock()
	set := p.set
	p.mu.RUnlock()
	if set == nil {
		return status.Error(codes.FailedPrecondition, "not configured")
	}
	set.faults.Serve()

	req, err := stream.Recv()
	if err != nil {
		return err
	}
	raw := req.GetPayload()
	payload, err := hmacnode.ParsePayload(raw)
	if err != nil {
		p.log.Warn("Refused attestation", "reason", err.Error())
		return status.Error(codes.InvalidArgument, err.Error())
	}
	agentID, err := spiffeid.FromSegments(set.trustDomain, "spire", "agent", "hmac", payload.Node)
	if err != nil {
		p.log.Warn("Refused attestation", "node", payload.Node, "reason", err.Error())
		return status.Errorf(codes.InvalidArgument, "node %q cannot be an ID path segment: %v", payload.Node, err)
	}

	challenge := make([]byte, hmacnode.ChallengeSize)
	if _, err := rand.Read(challenge); err != nil {
		return status.Errorf(codes.Internal, "make challenge: %v", err)
	}
	if err := stream.Send(&nodeattestorv1.AttestResponse{
		Response: &nodeattestorv1.AttestResponse_Challenge{Challenge: challenge},
	}); err != nil {
		return err
	}
	req, err = stream.Recv()
	if err != nil {
		return err
	}
	if !hmacnode.Verify(set.secret, raw, challenge, req.GetChallengeResponse()) {
		p.log.Warn("Refused attestation", "node", payload.Node, "reason", "hmac mismatch")
		return status.Error(codes.PermissionDenied, "hmac mismatch")
	}

	selectors := []string{"node:" + payload.Node}
	if set.useAgentStore {
		seen, err := p.seenBefore(stream.Context(), agentID.String())
		if err != nil {
			return err
		}
		if seen {
			selectors = append(selectors, "seen_before:true")
		} else {
			selectors = append(selectors, "seen_before:false")
		}
	}
	p.log.Debug("Attested node", "node", payload.Node, "agent_id", agentID.String())
	return stream.Send(&nodeattestorv1.AttestResponse{
		Response: &nodeattestorv1.AttestResponse_AgentAttributes{AgentAttributes: &nodeattestorv1.AgentAttributes{
			SpiffeId:       agentID.String(),
			SelectorValues: selectors,
			CanReattest:    true,
		}},
	})
}

// seenBefore asks the host whether the agent has attested before; NotFound
// is the host's way of saying no.
func (p *Plugin) seenBefore(ctx context.Context, agentID string) (bool, error) {
	_, err := p.agentStore.GetAgentInfo(ctx, &agentstorev1.GetAgentInfoRequest{AgentId: agentID})
	switch status.Code(err) {
	case codes.OK:
		return true, nil
	case codes.NotFound:
		return false, nil
	default:
		return false, status.Errorf(codes.Internal, "agent store: %v", err)
	}
}
