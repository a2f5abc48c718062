package api

import (
	"context"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	debugv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/debug/v1"
)

// DebugService implements debug/v1.
type DebugService struct {
	debugv1.UnimplementedDebugServer
	api *API
}

// GetInfo implements debug/v1.
func (s *DebugService) GetInfo(ctx context.Context, _ *debugv1.GetInfoRequest) (*debugv1.GetInfoResponse, error) {
	ds := s.api.cfg.DataStore
	agents, err := ds.CountAttestedNodes(ctx, nil)
	if err != nil {
		return nil, dsError("count agents", err)
	}
	entries, err := ds.CountEntries(ctx, nil)
	if err != nil {
		return nil, dsError("count entries", err)
	}
	bundles, _, err := ds.ListBundles(ctx, nil)
	if err != nil {
		return nil, dsError("list bundles", err)
	}
	resp := &debugv1.GetInfoResponse{
		Uptime:                int32(s.api.now().Sub(s.api.started).Seconds()),
		AgentsCount:           agents,
		EntriesCount:          entries,
		FederatedBundlesCount: int32(max(len(bundles)-1, 0)),
	}
	if s.api.cfg.ServerSVID != nil {
		for _, c := range s.api.cfg.ServerSVID() {
			cert := &debugv1.GetInfoResponse_Cert{ExpiresAt: c.NotAfter.Unix(), Subject: c.Subject.String()}
			if id, err := x509svid.IDFromCert(c); err == nil {
				cert.Id = idToProto(id)
			}
			resp.SvidChain = append(resp.SvidChain, cert)
		}
	}
	return resp, nil
}
