package api

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	trustdomainv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/trustdomain/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// SPIRE's names of the two bundle endpoint profiles, as its audit lines
// and CLI print them.
const (
	profileHTTPSWeb    = "https_web"
	profileHTTPSSPIFFE = "https_spiffe"
)

// BundleRefresher is what trustdomain/v1 needs from the federation
// bundle refresher (server/federation). RefreshBundleFor fetches td's
// bundle from its relationship's endpoint now and reports false when
// there is no relationship with td.
type BundleRefresher interface {
	RefreshBundleFor(ctx context.Context, td spiffeid.TrustDomain) (bool, error)
}

// configReloader is the optional half of SPIRE's BundleRefresher: a
// refresher that caches relationships implements it to hear at once
// that a batch changed them, rather than at its next poll.
type configReloader interface {
	TriggerConfigReload()
}

// TrustDomainService implements trustdomain/v1: the dynamic federation
// relationships of SPIRE, with its validation rules and messages. Every
// method is for admins (the admin socket or an admin SVID), as in SPIRE's
// default policy.
type TrustDomainService struct {
	trustdomainv1.UnsafeTrustDomainServer
	api *API
}

var _ trustdomainv1.TrustDomainServer = (*TrustDomainService)(nil)

// fail logs a refusal or failure with its reason and returns it in
// SPIRE's words: msg, then the cause's message when there is one.
func (s *TrustDomainService) fail(ctx context.Context, code codes.Code, msg string, cause error, attrs ...any) error {
	text := msg
	if cause != nil {
		text = msg + ": " + causeMessage(cause)
	}
	attrs = append(attrs, "reason", text, "caller", peerAddr(ctx))
	if code == codes.Internal || code == codes.Unavailable {
		s.api.cfg.Log.Error("trustdomain: call failed", attrs...)
	} else {
		s.api.cfg.Log.Warn("trustdomain: request refused", attrs...)
	}
	return status.Error(code, text)
}

// ListFederationRelationships implements trustdomain/v1. A page size of
// zero lists everything, as in SPIRE.
func (s *TrustDomainService) ListFederationRelationships(ctx context.Context, req *trustdomainv1.ListFederationRelationshipsRequest) (*trustdomainv1.ListFederationRelationshipsResponse, error) {
	var p *datastore.Pagination
	if req.PageSize > 0 {
		p = &datastore.Pagination{Size: req.PageSize, Token: req.PageToken}
	}
	frs, next, err := s.api.cfg.DataStore.ListFederationRelationships(ctx, p)
	if err != nil {
		return nil, s.fail(ctx, codes.Internal, "failed to list federation relationships", err)
	}
	resp := &trustdomainv1.ListFederationRelationshipsResponse{NextPageToken: next}
	for _, fr := range frs {
		out, err := relationshipToProto(fr, req.OutputMask)
		if err != nil {
			return nil, s.fail(ctx, codes.InvalidArgument, "failed to convert datastore response", err)
		}
		resp.FederationRelationships = append(resp.FederationRelationships, out)
	}
	return resp, nil
}

// GetFederationRelationship implements trustdomain/v1.
func (s *TrustDomainService) GetFederationRelationship(ctx context.Context, req *trustdomainv1.GetFederationRelationshipRequest) (*types.FederationRelationship, error) {
	td, err := spiffeid.TrustDomainFromString(req.TrustDomain)
	if err != nil {
		return nil, s.fail(ctx, codes.InvalidArgument, "failed to parse trust domain", err)
	}
	fr, err := s.api.cfg.DataStore.FetchFederationRelationship(ctx, td.Name())
	switch {
	case errors.Is(err, datastore.ErrNotFound):
		return nil, s.fail(ctx, codes.NotFound, "federation relationship does not exist", nil, "trust_domain_id", td.Name())
	case err != nil:
		return nil, s.fail(ctx, codes.Internal, "failed to fetch federation relationship", err)
	}
	out, err := relationshipToProto(fr, req.OutputMask)
	if err != nil {
		return nil, s.fail(ctx, codes.Internal, "failed to convert datastore response", err)
	}
	return out, nil
}

// BatchCreateFederationRelationship implements trustdomain/v1: each
// relationship is validated and stored on its own, with its own status.
func (s *TrustDomainService) BatchCreateFederationRelationship(ctx context.Context, req *trustdomainv1.BatchCreateFederationRelationshipRequest) (*trustdomainv1.BatchCreateFederationRelationshipResponse, error) {
	if len(req.FederationRelationships) > MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "too many federation relationships: %d, at most %d", len(req.FederationRelationships), MaxBatch)
	}
	resp := &trustdomainv1.BatchCreateFederationRelationshipResponse{}
	changed := false
	for _, in := range req.FederationRelationships {
		fr, err := s.create(ctx, in, req.OutputMask)
		changed = changed || err == nil
		resp.Results = append(resp.Results, &trustdomainv1.BatchCreateFederationRelationshipResponse_Result{Status: toStatus(err), FederationRelationship: fr})
	}
	if changed {
		s.reload()
	}
	return resp, nil
}

func (s *TrustDomainService) create(ctx context.Context, in *types.FederationRelationship, mask *types.FederationRelationshipMask) (*types.FederationRelationship, error) {
	td := in.GetTrustDomain()
	fr, err := relationshipFromProto(in)
	if err != nil {
		return nil, s.fail(ctx, codes.InvalidArgument, "failed to convert federation relationship", err, "trust_domain_id", td)
	}
	if fr.TrustDomain == s.api.cfg.TrustDomain.Name() {
		return nil, s.fail(ctx, codes.InvalidArgument, "unable to create federation relationship for server trust domain", nil, "trust_domain_id", td)
	}
	stored, err := s.api.cfg.DataStore.CreateFederationRelationship(ctx, fr)
	if err != nil {
		// SPIRE answers Internal for every datastore failure here, an
		// existing relationship included.
		return nil, s.fail(ctx, codes.Internal, "failed to create federation relationship", err, "trust_domain_id", td)
	}
	out, err := relationshipToProto(stored, mask)
	if err != nil {
		return nil, s.fail(ctx, codes.Internal, "failed to convert datastore response", err, "trust_domain_id", td)
	}
	s.warnMissingEndpointBundle(ctx, stored)
	s.api.cfg.Log.Debug("Federation relationship created", "trust_domain_id", stored.TrustDomain)
	return out, nil
}

// BatchUpdateFederationRelationship implements trustdomain/v1. The input
// mask selects the fields to change (all when nil); as in SPIRE, every
// relationship in the request must be valid as a whole, whatever the mask.
func (s *TrustDomainService) BatchUpdateFederationRelationship(ctx context.Context, req *trustdomainv1.BatchUpdateFederationRelationshipRequest) (*trustdomainv1.BatchUpdateFederationRelationshipResponse, error) {
	if len(req.FederationRelationships) > MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "too many federation relationships: %d, at most %d", len(req.FederationRelationships), MaxBatch)
	}
	inMask := req.InputMask
	if inMask == nil {
		inMask = allRelationshipFields()
	}
	resp := &trustdomainv1.BatchUpdateFederationRelationshipResponse{}
	changed := false
	for _, in := range req.FederationRelationships {
		fr, err := s.update(ctx, in, inMask, req.OutputMask)
		changed = changed || err == nil
		resp.Results = append(resp.Results, &trustdomainv1.BatchUpdateFederationRelationshipResponse_Result{Status: toStatus(err), FederationRelationship: fr})
	}
	if changed {
		s.reload()
	}
	return resp, nil
}

func (s *TrustDomainService) update(ctx context.Context, in *types.FederationRelationship, inMask, outMask *types.FederationRelationshipMask) (*types.FederationRelationship, error) {
	td := in.GetTrustDomain()
	fr, err := relationshipFromProto(in)
	if err != nil {
		return nil, s.fail(ctx, codes.InvalidArgument, "failed to convert federation relationship", err, "trust_domain_id", td)
	}
	stored, err := s.api.cfg.DataStore.UpdateFederationRelationship(ctx, fr, inMask)
	if err != nil {
		// A relationship that does not exist is Internal too in SPIRE.
		return nil, s.fail(ctx, codes.Internal, "failed to update federation relationship", err, "trust_domain_id", td)
	}
	out, err := relationshipToProto(stored, outMask)
	if err != nil {
		return nil, s.fail(ctx, codes.Internal, "failed to convert federation relationship to proto", err, "trust_domain_id", td)
	}
	s.warnMissingEndpointBundle(ctx, stored)
	s.api.cfg.Log.Debug("Federation relationship updated", "trust_domain_id", stored.TrustDomain)
	return out, nil
}

// BatchDeleteFederationRelationship implements trustdomain/v1. The
// federated bundle stays, as in SPIRE: deleting it is bundle/v1's job.
func (s *TrustDomainService) BatchDeleteFederationRelationship(ctx context.Context, req *trustdomainv1.BatchDeleteFederationRelationshipRequest) (*trustdomainv1.BatchDeleteFederationRelationshipResponse, error) {
	if len(req.TrustDomains) > MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "too many trust domains: %d, at most %d", len(req.TrustDomains), MaxBatch)
	}
	resp := &trustdomainv1.BatchDeleteFederationRelationshipResponse{}
	changed := false
	for _, name := range req.TrustDomains {
		res := s.delete(ctx, name)
		changed = changed || res.Status.Code == int32(codes.OK)
		resp.Results = append(resp.Results, res)
	}
	if changed {
		s.reload()
	}
	return resp, nil
}

func (s *TrustDomainService) delete(ctx context.Context, name string) *trustdomainv1.BatchDeleteFederationRelationshipResponse_Result {
	if name == "" {
		return &trustdomainv1.BatchDeleteFederationRelationshipResponse_Result{
			Status: toStatus(s.fail(ctx, codes.InvalidArgument, "missing trust domain", nil)),
		}
	}
	td, err := spiffeid.TrustDomainFromString(name)
	if err != nil {
		return &trustdomainv1.BatchDeleteFederationRelationshipResponse_Result{
			TrustDomain: name,
			Status:      toStatus(s.fail(ctx, codes.InvalidArgument, "failed to parse trust domain", err, "trust_domain_id", name)),
		}
	}
	err = s.api.cfg.DataStore.DeleteFederationRelationship(ctx, td.Name())
	switch {
	case err == nil:
		s.api.cfg.Log.Debug("Federation relationship deleted", "trust_domain_id", td.Name())
	case errors.Is(err, datastore.ErrNotFound):
		err = s.fail(ctx, codes.NotFound, "federation relationship not found", nil, "trust_domain_id", td.Name())
	default:
		err = s.fail(ctx, codes.Internal, "failed to delete federation relationship", err, "trust_domain_id", td.Name())
	}
	return &trustdomainv1.BatchDeleteFederationRelationshipResponse_Result{TrustDomain: td.Name(), Status: toStatus(err)}
}

// RefreshBundle implements trustdomain/v1: the refresher fetches the
// trust domain's bundle from its endpoint now, outside its schedule.
func (s *TrustDomainService) RefreshBundle(ctx context.Context, req *trustdomainv1.RefreshBundleRequest) (*emptypb.Empty, error) {
	td, err := spiffeid.TrustDomainFromString(req.TrustDomain)
	if err != nil {
		return nil, s.fail(ctx, codes.InvalidArgument, "failed to parse trust domain", err)
	}
	r := s.api.cfg.BundleRefresher
	if r == nil {
		return nil, s.fail(ctx, codes.Internal, "failed to refresh bundle", errors.New("the server has no bundle refresher"), "trust_domain_id", td.Name())
	}
	managed, err := r.RefreshBundleFor(ctx, td)
	if err != nil {
		return nil, s.fail(ctx, codes.Internal, "failed to refresh bundle", err, "trust_domain_id", td.Name())
	}
	if !managed {
		return nil, s.fail(ctx, codes.NotFound, fmt.Sprintf("no relationship with trust domain %q", td), nil, "trust_domain_id", td.Name())
	}
	s.api.cfg.Log.Debug("Bundle refreshed", "trust_domain_id", td.Name())
	return &emptypb.Empty{}, nil
}

// reload tells a refresher that caches relationships that a batch
// changed them.
func (s *TrustDomainService) reload() {
	if r, ok := s.api.cfg.BundleRefresher.(configReloader); ok {
		r.TriggerConfigReload()
	}
}

// warnMissingEndpointBundle warns, as SPIRE does, when an https_spiffe
// relationship has no bundle to authenticate its endpoint with: neither
// one given with the relationship nor one stored for the endpoint's trust
// domain. Until one arrives (bundle/v1, or a relationship with that trust
// domain), every refresh fails.
func (s *TrustDomainService) warnMissingEndpointBundle(ctx context.Context, fr *types.FederationRelationship) {
	p := fr.GetHttpsSpiffe()
	if p == nil || fr.TrustDomainBundle != nil {
		return
	}
	id, err := spiffeid.FromString(p.EndpointSpiffeId)
	if err != nil {
		return
	}
	_, err = s.api.cfg.DataStore.FetchBundle(ctx, id.TrustDomain().Name())
	switch {
	case errors.Is(err, datastore.ErrNotFound):
		s.api.cfg.Log.Warn("bundle not found for the endpoint SPIFFE ID trust domain", "trust_domain_id", fr.TrustDomain, "endpoint_spiffe_id", id.String())
	case err != nil:
		s.api.cfg.Log.Warn("failed to check whether a bundle exists for the endpoint SPIFFE ID trust domain", "trust_domain_id", fr.TrustDomain, "endpoint_spiffe_id", id.String(), "error", err)
	}
}

func allRelationshipFields() *types.FederationRelationshipMask {
	return &types.FederationRelationshipMask{BundleEndpointUrl: true, BundleEndpointProfile: true, TrustDomainBundle: true}
}

// relationshipFromProto validates a relationship from the wire with
// SPIRE's rules and messages (ProtoToFederationRelationship) and returns
// it in the form the datastore keeps: the trust domain by name, the URL
// as parsed, the profile's SPIFFE ID normalized, and the bundle's trust
// domain by name.
func relationshipFromProto(in *types.FederationRelationship) (*types.FederationRelationship, error) {
	if in == nil {
		return nil, errors.New("missing federation relationship")
	}
	td, err := spiffeid.TrustDomainFromString(in.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("failed to parse trust domain: %w", err)
	}
	u, err := url.Parse(in.BundleEndpointUrl)
	switch {
	case err != nil:
		return nil, fmt.Errorf("failed to parse bundle endpoint URL: %w", err)
	case u.Scheme != "https":
		return nil, errors.New("bundle endpoint URL must use the https scheme")
	case u.Host == "":
		return nil, errors.New("bundle endpoint URL must specify the host")
	case u.User != nil:
		return nil, errors.New("bundle endpoint URL must not contain user info")
	}
	out := &types.FederationRelationship{TrustDomain: td.Name(), BundleEndpointUrl: u.String()}
	switch p := in.BundleEndpointProfile.(type) {
	case *types.FederationRelationship_HttpsSpiffe:
		if p.HttpsSpiffe == nil {
			return nil, errors.New(`bundle endpoint profile does not contain "HttpsSpiffe"`)
		}
		id, err := spiffeid.FromString(p.HttpsSpiffe.EndpointSpiffeId)
		if err != nil {
			return nil, fmt.Errorf("failed to parse endpoint SPIFFE ID: %w", err)
		}
		out.BundleEndpointProfile = &types.FederationRelationship_HttpsSpiffe{HttpsSpiffe: &types.HTTPSSPIFFEProfile{EndpointSpiffeId: id.String()}}
	case *types.FederationRelationship_HttpsWeb:
		out.BundleEndpointProfile = &types.FederationRelationship_HttpsWeb{HttpsWeb: &types.HTTPSWebProfile{}}
	default:
		return nil, fmt.Errorf("unsupported bundle endpoint profile type: %T", in.BundleEndpointProfile)
	}
	if b := in.TrustDomainBundle; b != nil {
		bundle, err := relationshipBundle(b)
		if err != nil {
			return nil, fmt.Errorf("failed to parse bundle: %w", err)
		}
		if bundle.TrustDomain != td.Name() {
			return nil, fmt.Errorf("trust domain bundle (%q) must match the trust domain of the federation relationship (%q)", b.TrustDomain, td)
		}
		out.TrustDomainBundle = bundle
	}
	return out, nil
}

// relationshipBundle checks a relationship's bundle as SPIRE's
// ProtoToBundle does, so that no malformed key reaches a bundle agents
// trust.
func relationshipBundle(b *types.Bundle) (*types.Bundle, error) {
	td, err := spiffeid.TrustDomainFromString(b.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("invalid trust domain: %w", err)
	}
	for _, c := range b.X509Authorities {
		if _, err := x509.ParseCertificates(c.GetAsn1()); err != nil {
			return nil, fmt.Errorf("unable to parse X.509 authority: %w", err)
		}
	}
	for _, k := range b.JwtAuthorities {
		if _, err := x509.ParsePKIXPublicKey(k.GetPublicKey()); err != nil {
			return nil, fmt.Errorf("unable to parse JWT authority: %w", err)
		}
		if k.KeyId == "" {
			return nil, errors.New("unable to parse JWT authority: missing key ID")
		}
	}
	return &types.Bundle{TrustDomain: td.Name(), X509Authorities: b.X509Authorities, JwtAuthorities: b.JwtAuthorities,
		RefreshHint: b.RefreshHint, SequenceNumber: b.SequenceNumber}, nil
}

// relationshipToProto applies an output mask (all fields when nil) to a
// stored relationship, refusing one the store should never hold, as
// SPIRE's FederationRelationshipToProto does.
func relationshipToProto(fr *types.FederationRelationship, mask *types.FederationRelationshipMask) (*types.FederationRelationship, error) {
	if mask == nil {
		mask = allRelationshipFields()
	}
	if fr.GetTrustDomain() == "" {
		return nil, errors.New("trust domain is required")
	}
	out := &types.FederationRelationship{TrustDomain: fr.TrustDomain}
	if mask.BundleEndpointUrl {
		if fr.BundleEndpointUrl == "" {
			return nil, errors.New("bundle endpoint URL is required")
		}
		out.BundleEndpointUrl = fr.BundleEndpointUrl
	}
	if mask.BundleEndpointProfile {
		switch p := fr.BundleEndpointProfile.(type) {
		case *types.FederationRelationship_HttpsSpiffe:
			out.BundleEndpointProfile = &types.FederationRelationship_HttpsSpiffe{HttpsSpiffe: &types.HTTPSSPIFFEProfile{EndpointSpiffeId: p.HttpsSpiffe.GetEndpointSpiffeId()}}
		case *types.FederationRelationship_HttpsWeb:
			out.BundleEndpointProfile = &types.FederationRelationship_HttpsWeb{HttpsWeb: &types.HTTPSWebProfile{}}
		default:
			return nil, fmt.Errorf("unsupported BundleEndpointProfile: %T", fr.BundleEndpointProfile)
		}
	}
	if mask.TrustDomainBundle {
		out.TrustDomainBundle = fr.TrustDomainBundle
	}
	return out, nil
}
