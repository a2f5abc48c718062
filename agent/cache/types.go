// Package cache holds what the agent knows: the entries it is authorized
// for, the SVIDs issued for them, and the trust bundles. The manager fills
// it; the Workload API reads it through subscriptions keyed by a workload's
// selectors.
package cache

import (
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// Identity is one X.509-SVID a workload may receive.
type Identity struct {
	Entry *types.Entry
	// SVID is nil when there is none; it is shared by every copy of the
	// Identity (it never changes).
	SVID *X509SVID
}

// WorkloadUpdate is everything a workload with a given set of selectors may
// see at one moment.
type WorkloadUpdate struct {
	Identities []Identity
	// Entries are all the entries the workload matches, with an X.509-SVID
	// held or not (beyond x509_svid_cache_max_size one may not be):
	// JWT-SVIDs are minted for them.
	Entries          []*types.Entry
	Bundle           *spiffebundle.Bundle // the agent's own trust domain
	FederatedBundles map[spiffeid.TrustDomain]*spiffebundle.Bundle
}

// JWTSVID is a signed JWT-SVID with the times the agent needs to decide
// whether a cached one can still be handed out.
type JWTSVID struct {
	Token     string
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// Subscription delivers WorkloadUpdates for one set of selectors: the
// current state at once, then a new value on every change that concerns it.
// A slow reader only ever sees the latest update (older ones are dropped).
type Subscription interface {
	Updates() <-chan *WorkloadUpdate
	// Finish releases the subscription; it is safe to call more than once.
	Finish()
}
