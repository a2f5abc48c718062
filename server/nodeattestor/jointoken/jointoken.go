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
	FetchJoinToken(ctx context.Context, token string) (*datastore.JoinToken, error)
}

// Attestor checks join tokens; the server spends each in the write that
// records its node.
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

// Attest checks that the token is stored and unexpired, and names it in
// the result for the server to spend (Result.JoinToken): the delete is
// part of the transaction that records the node, which decides the race
// of two agents with one token, so that an attestation costs one commit.
// Checking here still refuses a wrong or used token before anything is
// signed for it.
func (a *Attestor) Attest(ctx context.Context, payload []byte, _ *x509.CertificateRequest, _ nodeattestor.ChallengeFunc) (*nodeattestor.Result, error) {
	token := string(payload)
	if token == "" {
		return nil, status.Error(codes.InvalidArgument, "join token: missing token")
	}
	id, err := AgentID(a.td, token)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "join token: malformed token: %v", err)
	}
	jt, err := a.store.FetchJoinToken(ctx, token)
	switch {
	case errors.Is(err, datastore.ErrNotFound):
		return nil, SpentError()
	case err != nil:
		return nil, status.Errorf(codes.Internal, "join token: fetch: %v", err)
	case jt.ExpiresAt.Before(a.now()):
		return nil, status.Error(codes.PermissionDenied, "join token: token expired")
	}
	return &nodeattestor.Result{AgentID: id, JoinToken: token}, nil
}

// SpentError is the refusal of a token that is not stored: never issued,
// or spent by an earlier attestation (or a concurrent one that recorded
// its node first).
func SpentError() error {
	return status.Error(codes.PermissionDenied, "join token: token does not exist or has already been used")
}
