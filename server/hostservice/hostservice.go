// Package hostservice holds the services the server offers back to its
// external plugins, as SPIRE does: AgentStore (is this agent known?) and
// IdentityProvider (the server's own X.509 identity and the trust bundle).
// The host serves them over go-plugin's broker; see package plugin.
package hostservice

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"sync"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	"github.com/spiffe-hw/spire-hw/server/pluginbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	agentstorev1 "github.com/spiffe/spire-plugin-sdk/proto/spire/hostservice/server/agentstore/v1"
	identityproviderv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/hostservice/server/identityprovider/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// AgentStore answers whether an agent has attested, from the datastore.
func AgentStore(nodes nodeattestor.NodeLookup) pluginsdk.ServiceServer {
	return agentstorev1.AgentStoreServiceServer(&agentStore{nodes: nodes})
}

type agentStore struct {
	agentstorev1.UnsafeAgentStoreServer
	nodes nodeattestor.NodeLookup
}

func (s *agentStore) GetAgentInfo(ctx context.Context, req *agentstorev1.GetAgentInfoRequest) (*agentstorev1.GetAgentInfoResponse, error) {
	if _, err := spiffeid.FromString(req.GetAgentId()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "agent ID %q is not a SPIFFE ID: %v", req.GetAgentId(), err)
	}
	n, err := s.nodes.FetchAttestedNode(ctx, req.GetAgentId())
	switch {
	case errors.Is(err, datastore.ErrNotFound) || (err == nil && n == nil):
		return nil, status.Error(codes.NotFound, "no such agent")
	case err != nil:
		return nil, status.Errorf(codes.Internal, "look up agent: %v", err)
	}
	return &agentstorev1.GetAgentInfoResponse{Info: &agentstorev1.AgentInfo{AgentId: req.GetAgentId()}}, nil
}

// BundleFetcher reads a trust domain's bundle; datastore.DataStore is one.
type BundleFetcher interface {
	FetchBundle(ctx context.Context, trustDomain string) (*types.Bundle, error)
}

// IdentityProvider serves the server's X.509-SVID and its bundle. The
// plugins load before the server has an SVID, so the SVID source is set
// later with SetIdentity; until then calls fail with FailedPrecondition,
// as SPIRE's do.
type IdentityProvider struct {
	td      spiffeid.TrustDomain
	bundles BundleFetcher

	mu   sync.RWMutex
	cert func() (*tls.Certificate, error)
}

// NewIdentityProvider returns a provider for td's bundle from bundles.
func NewIdentityProvider(td spiffeid.TrustDomain, bundles BundleFetcher) *IdentityProvider {
	return &IdentityProvider{td: td, bundles: bundles}
}

// SetIdentity sets where the server's current SVID comes from.
func (p *IdentityProvider) SetIdentity(cert func() (*tls.Certificate, error)) {
	p.mu.Lock()
	p.cert = cert
	p.mu.Unlock()
}

// Service is the SDK service to hand the plugin host.
func (p *IdentityProvider) Service() pluginsdk.ServiceServer {
	return identityproviderv1.IdentityProviderServiceServer(&identityProvider{p: p})
}

type identityProvider struct {
	identityproviderv1.UnsafeIdentityProviderServer
	p *IdentityProvider
}

func (s *identityProvider) FetchX509Identity(ctx context.Context, _ *identityproviderv1.FetchX509IdentityRequest) (*identityproviderv1.FetchX509IdentityResponse, error) {
	s.p.mu.RLock()
	source := s.p.cert
	s.p.mu.RUnlock()
	if source == nil {
		return nil, status.Error(codes.FailedPrecondition, "IdentityProvider host service has not been initialized")
	}
	cert, err := source()
	if err != nil || cert == nil {
		return nil, status.Errorf(codes.Unavailable, "server SVID: %v", err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "marshal server SVID key: %v", err)
	}
	b, err := s.p.bundles.FetchBundle(ctx, s.p.td.Name())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "fetch bundle: %v", err)
	}
	// A stored bundle that does not convert is the server's fault, not the
	// plugin's: hand it nothing rather than what it could not parse.
	pb, err := pluginbundle.FromAPI(b)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "convert bundle: %v", err)
	}
	return &identityproviderv1.FetchX509IdentityResponse{
		Identity: &identityproviderv1.X509Identity{CertChain: cert.Certificate, PrivateKey: key},
		Bundle:   pb,
	}, nil
}
