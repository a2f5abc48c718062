package api

import "github.com/spiffe/spire-api-sdk/proto/spire/api/types"

// workloadEntry is an entry for path under /agent with a unix selector.
func workloadEntry(path string) *types.Entry {
	return &types.Entry{SpiffeId: &types.SPIFFEID{TrustDomain: "example.org", Path: path}, ParentId: &types.SPIFFEID{TrustDomain: "example.org", Path: "/agent"}, Selectors: []*types.Selector{{Type: "unix", Value: "uid:1"}}}
}
