package workloadapi

import (
	"context"

	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// Manager is what the Workload API needs from the agent's manager. The
// agent's manager implements it; tests may use any implementation that holds
// real SVIDs.
type Manager interface {
	// SubscribeToCacheChanges streams the identities and bundles that
	// workloads with these selectors may see. The first update is delivered
	// at once, even if it holds no identity.
	SubscribeToCacheChanges(ctx context.Context, selectors []*types.Selector) (cache.Subscription, error)
	// FetchWorkloadUpdate returns the current state for these selectors.
	FetchWorkloadUpdate(selectors []*types.Selector) *cache.WorkloadUpdate
	// FetchJWTSVID returns a JWT-SVID for the entry and audience, reusing a
	// cached one until half its lifetime has passed.
	FetchJWTSVID(ctx context.Context, entry *types.Entry, audience []string) (*cache.JWTSVID, error)
}

// Attestor turns a caller into selectors. Implementations must identify the
// caller through the pidfd so that a reused PID cannot be mistaken for it.
// The selectors returned may be shared with other calls: callers read them
// and never modify them.
type Attestor interface {
	Attest(ctx context.Context, pid int32, pidfd int) ([]*types.Selector, error)
}
