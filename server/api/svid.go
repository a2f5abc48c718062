package api

import (
	"context"
	"time"

	"github.com/spiffe-hw/spire-hw/internal/parallel"
	"github.com/spiffe-hw/spire-hw/server/ca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// SVIDService implements svid/v1.
type SVIDService struct {
	svidv1.UnimplementedSVIDServer
	api *API
}

// MintX509SVID implements svid/v1 for admins: the CSR names the SPIFFE ID
// in its one URI SAN.
func (s *SVIDService) MintX509SVID(ctx context.Context, req *svidv1.MintX509SVIDRequest) (*svidv1.MintX509SVIDResponse, error) {
	csr, err := s.api.parseCallerCSR(ctx, "MintX509SVID", req.Csr)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "failed to parse CSR: %v", err)
	}
	if len(csr.URIs) != 1 {
		return nil, status.Error(codes.InvalidArgument, "CSR must have exactly one URI SAN")
	}
	id, err := spiffeid.FromURI(csr.URIs[0])
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "CSR URI SAN is not a SPIFFE ID: %v", err)
	}
	if !id.MemberOf(s.api.cfg.TrustDomain) {
		return nil, status.Errorf(codes.InvalidArgument, "CSR URI SAN %q is not a member of trust domain %q", id, s.api.cfg.TrustDomain)
	}
	if req.Ttl < 0 {
		return nil, status.Error(codes.InvalidArgument, "ttl must not be negative")
	}
	for _, n := range csr.DNSNames {
		if err := validateDNSName(n); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "CSR: %v", err)
		}
	}
	svid, err := s.api.cfg.CA.IssueX509SVID(ctx, ca.X509SVIDParams{
		SPIFFEID: id, PublicKey: csr.PublicKey, TTL: time.Duration(req.Ttl) * time.Second, DNSNames: csr.DNSNames, Subject: csr.Subject,
		// SPIRE composes a minted SVID as a workload's, whatever its path.
		Kind: ca.KindWorkload,
	})
	if err != nil {
		return nil, signError("failed to sign X509-SVID", err)
	}
	return &svidv1.MintX509SVIDResponse{Svid: x509SVIDToProto(id, svid)}, nil
}

// MintJWTSVID implements svid/v1 for admins.
func (s *SVIDService) MintJWTSVID(ctx context.Context, req *svidv1.MintJWTSVIDRequest) (*svidv1.MintJWTSVIDResponse, error) {
	id, err := s.api.idFromProto("invalid SPIFFE ID", req.Id)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := validateAudience(req.Audience); err != nil {
		return nil, err
	}
	if req.Ttl < 0 {
		return nil, status.Error(codes.InvalidArgument, "ttl must not be negative")
	}
	svid, err := s.mintJWT(ctx, id, req.Audience, time.Duration(req.Ttl)*time.Second, "")
	if err != nil {
		return nil, err
	}
	return &svidv1.MintJWTSVIDResponse{Svid: svid}, nil
}

func validateAudience(aud []string) error {
	if len(aud) == 0 {
		return status.Error(codes.InvalidArgument, "at least one audience is required")
	}
	for _, a := range aud {
		if a == "" {
			return status.Error(codes.InvalidArgument, "audience must not be empty")
		}
	}
	return nil
}

func (s *SVIDService) mintJWT(ctx context.Context, id spiffeid.ID, aud []string, ttl time.Duration, hint string) (*types.JWTSVID, error) {
	token, err := s.api.cfg.CA.SignJWTSVID(ctx, ca.JWTSVIDParams{SPIFFEID: id, Audience: aud, TTL: ttl})
	if err != nil {
		return nil, signError("failed to sign JWT-SVID", err)
	}
	iat, exp, err := jwtTimes(token)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "failed to read signed JWT-SVID: %v", err)
	}
	return &types.JWTSVID{Token: token, Id: idToProto(id), IssuedAt: iat, ExpiresAt: exp, Hint: hint}, nil
}

// BatchNewX509SVID implements svid/v1 for agents: each CSR is signed for an
// entry the calling agent is authorized for, with the entry's SPIFFE ID,
// TTL and DNS names; anything else is refused.
func (s *SVIDService) BatchNewX509SVID(ctx context.Context, req *svidv1.BatchNewX509SVIDRequest) (*svidv1.BatchNewX509SVIDResponse, error) {
	c, err := callerAgent(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.Params) > MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "too many params: %d, at most %d per request", len(req.Params), MaxBatch)
	}
	snap, m, err := s.api.authorizedEntries(ctx, c)
	if err != nil {
		return nil, dsError("authorized entries", err)
	}
	results := make([]*svidv1.BatchNewX509SVIDResponse_Result, len(req.Params))
	parallel.Each(len(req.Params), csrsPerWorker, func(i int) {
		svid, err := s.newX509SVID(ctx, req.Params[i], snap, m)
		results[i] = &svidv1.BatchNewX509SVIDResponse_Result{Status: toStatus(err), Svid: svid}
	})
	return &svidv1.BatchNewX509SVIDResponse{Results: results}, nil
}

// csrsPerWorker is the fewest CSRs of a batch that get a goroutine of
// their own: each costs about 100 µs (its signature checked, the SVID
// signed), which dwarfs starting one. A batch of hundreds (an agent
// starting with many entries, or renewing them) was otherwise signed on
// one core while the others idled; under load the goroutines only queue
// with the other calls' work.
const csrsPerWorker = 8

func (s *SVIDService) newX509SVID(ctx context.Context, p *svidv1.NewX509SVIDParams, snap *entrySnapshot, authorized *authorizedMemo) (*types.X509SVID, error) {
	if p == nil || p.EntryId == "" {
		return nil, status.Error(codes.InvalidArgument, "missing entry ID")
	}
	e, ok := authorizedEntry(snap, authorized, p.EntryId)
	if !ok {
		return nil, status.Errorf(codes.PermissionDenied, "entry %q is not authorized for this agent", p.EntryId)
	}
	csr, err := s.api.parseCallerCSR(ctx, "BatchNewX509SVID", p.Csr)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "failed to parse CSR: %v", err)
	}
	id, err := s.api.idFromProto("entry SPIFFE ID", e.SpiffeId)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	svid, err := s.api.cfg.CA.IssueX509SVID(ctx, ca.X509SVIDParams{
		SPIFFEID: id, PublicKey: csr.PublicKey, TTL: time.Duration(e.X509SvidTtl) * time.Second, DNSNames: e.DnsNames,
		Kind: ca.KindWorkload,
	})
	if err != nil {
		return nil, signError("failed to sign X509-SVID", err)
	}
	out := x509SVIDToProto(id, svid)
	out.Hint = e.Hint
	return out, nil
}

// NewJWTSVID implements svid/v1 for agents.
func (s *SVIDService) NewJWTSVID(ctx context.Context, req *svidv1.NewJWTSVIDRequest) (*svidv1.NewJWTSVIDResponse, error) {
	c, err := callerAgent(ctx)
	if err != nil {
		return nil, err
	}
	if req.EntryId == "" {
		return nil, status.Error(codes.InvalidArgument, "missing entry ID")
	}
	if err := validateAudience(req.Audience); err != nil {
		return nil, err
	}
	snap, m, err := s.api.authorizedEntries(ctx, c)
	if err != nil {
		return nil, dsError("authorized entries", err)
	}
	if e, ok := authorizedEntry(snap, m, req.EntryId); ok {
		id, err := s.api.idFromProto("entry SPIFFE ID", e.SpiffeId)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "%v", err)
		}
		svid, err := s.mintJWT(ctx, id, req.Audience, time.Duration(e.JwtSvidTtl)*time.Second, e.Hint)
		if err != nil {
			return nil, err
		}
		return &svidv1.NewJWTSVIDResponse{Svid: svid}, nil
	}
	return nil, status.Errorf(codes.PermissionDenied, "entry %q is not authorized for this agent", req.EntryId)
}

// authorizedEntry returns the entry with this ID, decoded, if it is among
// m's.
func authorizedEntry(snap *entrySnapshot, m *authorizedMemo, id string) (*types.Entry, bool) {
	i, ok := snap.find(id)
	if !ok || !m.contains(i) {
		return nil, false
	}
	return snap.entry(i), true
}
