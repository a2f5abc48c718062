package delegatedidentity

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	delegatedidentityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/delegatedidentity/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/agent/cache"
)

// SubscribeToX509SVIDs streams the X.509-SVIDs of the workload the request
// names, by selectors or by PID, one message per change of what those
// selectors may see (rotation, entry changes, federated bundles), as
// SPIRE's: no bundle, the trust domains of the federated bundles in
// FederatesWith, no admin or downstream SVID. A stream by PID ends with
// NotFound when that process exits.
func (s *Service) SubscribeToX509SVIDs(req *delegatedidentityv1.SubscribeToX509SVIDsRequest, stream delegatedidentityv1.DelegatedIdentity_SubscribeToX509SVIDsServer) error {
	start := time.Now()
	defer s.begin()()
	ctx := stream.Context()
	c, err := s.authorize(ctx, "SubscribeToX509SVIDs")
	if err != nil {
		return err
	}
	release, err := s.openStream(c)
	if err != nil {
		return err
	}
	defer release()
	selectors, proc, err := s.selectors(ctx, c, req.Pid, req.Selectors)
	if err != nil {
		return err
	}
	var exited <-chan struct{}
	if proc != nil {
		var stop func()
		exited, stop = proc.exited()
		defer stop()
	}
	log := c.log
	log.Debug("Subscribing to cache changes", "delegate_selectors", selectorStrings(c.selectors),
		"request_selectors", selectorStrings(selectors))
	sub, err := s.manager.SubscribeToCacheChanges(ctx, selectors)
	if err != nil {
		log.Error("Subscribe to cache changes failed", "error", err)
		return err
	}
	defer sub.Finish()

	first := false
	for {
		select {
		case update, ok := <-sub.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return status.Error(codes.Unavailable, "subscription closed")
			}
			if len(update.Identities) > 0 && !first {
				// SPIRE's latency of the first update that holds an SVID.
				s.metrics.MeasureSince([]string{"delegated_identity_api", "subscribe_x509_svids", "first_update", "elapsed_time"}, start)
				first = true
			}
			if err := s.recheck(c); err != nil {
				return err
			}
			resp, err := composeX509SVIDs(update)
			if err != nil {
				log.Error("Could not serialize X.509 SVID response", "error", err)
				return status.Error(codes.Internal, "could not serialize response")
			}
			if err := stream.Send(resp); err != nil {
				log.Error("Failed to send X.509 SVID response", "error", err)
				return err
			}
			if log.Enabled(ctx, slog.LevelDebug) {
				for _, svid := range resp.X509Svids {
					log.Debug("Fetched X.509 SVID for delegated identity", "count", len(resp.X509Svids),
						"spiffe_id", "spiffe://"+svid.X509Svid.Id.TrustDomain+svid.X509Svid.Id.Path,
						"ttl", time.Until(time.Unix(svid.X509Svid.ExpiresAt, 0)).Seconds())
				}
			}
		case <-exited:
			log.Info("Ending stream: the process it was opened for has exited", "pid", proc.pid)
			return status.Errorf(codes.NotFound, "process with PID %d exited", proc.pid)
		case <-ctx.Done():
			return nil
		}
	}
}

// composeX509SVIDs is SPIRE's response for one update.
func composeX509SVIDs(update *cache.WorkloadUpdate) (*delegatedidentityv1.SubscribeToX509SVIDsResponse, error) {
	resp := &delegatedidentityv1.SubscribeToX509SVIDsResponse{X509Svids: []*delegatedidentityv1.X509SVIDWithKey{}}
	for td := range update.FederatedBundles {
		resp.FederatesWith = append(resp.FederatesWith, td.IDString())
	}
	// Sorted, for a stable answer from a map.
	slices.Sort(resp.FederatesWith)
	for _, identity := range update.Identities {
		// Admin and downstream SVIDs are never handed to a delegate.
		if identity.Entry.GetAdmin() || identity.Entry.GetDownstream() {
			continue
		}
		if identity.SVID == nil {
			return nil, errors.New("unable to get SVID from identity")
		}
		id, err := cache.EntryID(identity.Entry)
		if err != nil {
			return nil, fmt.Errorf("error during SPIFFE ID parsing: %w", err)
		}
		resp.X509Svids = append(resp.X509Svids, &delegatedidentityv1.X509SVIDWithKey{
			X509Svid: &types.X509SVID{
				Id:        idProto(id),
				CertChain: identity.SVID.Certificates(),
				ExpiresAt: identity.SVID.NotAfter().Unix(),
				Hint:      identity.Entry.GetHint(),
			},
			X509SvidKey: identity.SVID.PrivateKey(),
		})
	}
	return resp, nil
}
