package delegatedidentity

import (
	"context"
	"time"

	delegatedidentityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/delegatedidentity/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/agent/cache"
)

// FetchJWTSVIDs returns a JWT-SVID for the audience for every entry the
// workload's selectors (given, or attested from its PID) match, as SPIRE
// does: PermissionDenied "no identity issued" when there is none. For a
// PID, the answer is refused if the process exited before it was ready.
func (s *Service) FetchJWTSVIDs(ctx context.Context, req *delegatedidentityv1.FetchJWTSVIDsRequest) (*delegatedidentityv1.FetchJWTSVIDsResponse, error) {
	defer s.begin()()
	if err := checkAudiences(req.Audience); err != nil {
		s.log.Error("Invalid argument; bad audience", "method", "FetchJWTSVIDs", "error", err)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	c, err := s.authorize(ctx, "FetchJWTSVIDs")
	if err != nil {
		return nil, err
	}
	selectors, proc, err := s.selectors(ctx, c, req.Pid, req.Selectors)
	if err != nil {
		return nil, err
	}
	if proc != nil {
		defer proc.close()
	}
	resp := &delegatedidentityv1.FetchJWTSVIDsResponse{}
	for _, entry := range s.cache.MatchingEntries(selectors) {
		id, err := cache.EntryID(entry)
		if err != nil {
			c.log.Error("Invalid requested SPIFFE ID", "entry_id", entry.GetId(), "error", err)
			return nil, status.Errorf(codes.InvalidArgument, "invalid requested SPIFFE ID: %v", err)
		}
		log := c.log.With("spiffe_id", id.String())
		svid, err := s.manager.FetchJWTSVID(ctx, entry, req.Audience)
		if err != nil {
			log.Error("Could not fetch JWT-SVID", "error", err)
			return nil, status.Errorf(codes.Unavailable, "could not fetch JWT-SVID: %v", err)
		}
		resp.Svids = append(resp.Svids, &types.JWTSVID{
			Token:     svid.Token,
			Id:        idProto(id),
			ExpiresAt: svid.ExpiresAt.Unix(),
			IssuedAt:  svid.IssuedAt.Unix(),
			Hint:      entry.GetHint(),
		})
		log.Debug("Fetched JWT SVID", "ttl", time.Until(svid.ExpiresAt).Seconds())
	}
	if len(resp.Svids) == 0 {
		c.log.Error("No identity issued", "request_selectors", selectorStrings(selectors))
		return nil, status.Error(codes.PermissionDenied, "no identity issued")
	}
	if proc != nil && proc.alive() != nil {
		// Minting took long enough for the process to go: its PID may
		// name another one by the time the delegate reads the answer.
		c.log.Error("Refusing PID: the process exited before its JWT-SVIDs were ready", "pid", proc.pid)
		return nil, status.Errorf(codes.NotFound, "process with PID %d exited", proc.pid)
	}
	return resp, nil
}
