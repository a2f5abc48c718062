// Package jointoken verifies join-token attestation: the agent presents a
// single-use secret that an operator created with `token generate`.
package jointoken

import (
	"context"
	"crypto/x509"
	"errors"
	"time"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// PluginName is the attestation type and the plugin name in configs.
const PluginName = "join_token"

// TokenStore is the part of the datastore the attestor needs.
type TokenStore interface {
	ConsumeJoinToken(ctx context.Context, token string, now time.Time) (*datastore.JoinToken, error)
}

// Attestor consumes join tokens.
type Attestor struct {
	td    spiffeid.TrustDomain
	store TokenStore
	now   func() time.Time
}

// New returns an attestor for trust domain td. now may be nil.
func New(td spiffeid.TrustDomain, store TokenStore, now func() time.Time) *Attestor {
	if now == nil {
		now = time.Now
	}
	return &Attestor{td: td, store: store, now: now}
}

// Type implements nodeattestor.Attestor.
func (a *Attestor) Type() string { return PluginName }

// AgentID is the ID an agent attested with token receives.
func AgentID(td spiffeid.TrustDomain, token string) (spiffeid.ID, error) {
	return spiffeid.FromSegments(td, "spire", "agent", PluginName, token)
}

// Attest consumes the token. The datastore deletes it atomically, so of two
// agents racing with one token exactly one is attested.
func (a *Attestor) Attest(ctx context.Context, payload []byte, _ *x509.CertificateRequest, _ nodeattestor.ChallengeFunc) (*nodeattestor.Result, error) {
	token := string(payload)
	if token == "" {
		return nil, status.Error(codes.InvalidArgument, "join token: missing token")
	}
	id, err := AgentID(a.td, token)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "join token: malformed token: %v", err)
	}
	_, err = a.store.ConsumeJoinToken(ctx, token, a.now())
	switch {
	case err == nil:
		return &nodeattestor.Result{AgentID: id}, nil
	case errors.Is(err, datastore.ErrNotFound):
		return nil, status.Error(codes.PermissionDenied, "join token: token does not exist or has already been used")
	case errors.Is(err, datastore.ErrExpired):
		return nil, status.Error(codes.PermissionDenied, "join token: token expired")
	default:
		return nil, status.Errorf(codes.Internal, "join token: consume: %v", err)
	}
}
