package nodeattestor

import (
	"context"
	"errors"
	"fmt"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// NodeLookup is the part of the datastore attestors read attested nodes
// from.
type NodeLookup interface {
	FetchAttestedNode(ctx context.Context, spiffeID string) (*datastore.AttestedNode, error)
}

// CheckFirstUse enforces the first-use rule of attestors whose evidence
// can be replayed (cloud identity documents): once an agent attested as id,
// the same evidence is refused until the operator evicts that agent.
// prefix names the attestor and what names the evidence in the refusal.
func CheckFirstUse(ctx context.Context, nodes NodeLookup, id spiffeid.ID, prefix, what string) error {
	n, err := nodes.FetchAttestedNode(ctx, id.String())
	switch {
	case errors.Is(err, datastore.ErrNotFound) || (err == nil && n == nil):
		return nil
	case err != nil:
		return status.Errorf(codes.Internal, "%s: look up %s: %v", prefix, id, err)
	default:
		return status.Error(codes.PermissionDenied, fmt.Sprintf("%s: %s of %s already used to attest an agent; evict it first", prefix, what, id))
	}
}
