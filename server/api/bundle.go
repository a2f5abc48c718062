package api

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// BundleService implements bundle/v1.
type BundleService struct {
	bundlev1.UnimplementedBundleServer
	api *API
}

func applyBundleMask(b *types.Bundle, m *types.BundleMask) *types.Bundle {
	if m == nil {
		return b
	}
	out := &types.Bundle{TrustDomain: b.TrustDomain}
	if m.X509Authorities {
		out.X509Authorities = b.X509Authorities
	}
	if m.JwtAuthorities {
		out.JwtAuthorities = b.JwtAuthorities
	}
	if m.RefreshHint {
		out.RefreshHint = b.RefreshHint
	}
	if m.SequenceNumber {
		out.SequenceNumber = b.SequenceNumber
	}
	return out
}

// GetBundle implements bundle/v1: the server's own trust bundle, public.
func (s *BundleService) GetBundle(ctx context.Context, req *bundlev1.GetBundleRequest) (*types.Bundle, error) {
	b, ver, err := s.api.bundle.getVersion(ctx)
	if err != nil {
		return nil, dsError("bundle", err)
	}
	if c, ok := CallerFromContext(ctx); ok && c.Role == RoleAgent {
		s.api.notices.servedBundle(c.ID.String(), ver)
	}
	return applyBundleMask(b, req.OutputMask), nil
}

// CountBundles implements bundle/v1.
func (s *BundleService) CountBundles(ctx context.Context, _ *bundlev1.CountBundlesRequest) (*bundlev1.CountBundlesResponse, error) {
	n, err := s.api.cfg.DataStore.CountBundles(ctx)
	if err != nil {
		return nil, dsError("count bundles", err)
	}
	return &bundlev1.CountBundlesResponse{Count: n}, nil
}

// validateAuthorities checks X.509 authorities parse and JWT keys are
// complete, so that no malformed key reaches a bundle that agents trust.
func validateAuthorities(x509s []*types.X509Certificate, jwts []*types.JWTKey) error {
	for i, c := range x509s {
		if c == nil || len(c.Asn1) == 0 {
			return fmt.Errorf("x509 authority %d: missing certificate", i)
		}
		if _, err := x509.ParseCertificate(c.Asn1); err != nil {
			return fmt.Errorf("x509 authority %d: %v", i, err)
		}
	}
	for i, k := range jwts {
		switch {
		case k == nil:
			return fmt.Errorf("jwt authority %d: missing", i)
		case k.KeyId == "":
			return fmt.Errorf("jwt authority %d: missing key ID", i)
		case len(k.PublicKey) == 0:
			return fmt.Errorf("jwt authority %q: missing public key", k.KeyId)
		}
		if _, err := x509.ParsePKIXPublicKey(k.PublicKey); err != nil {
			return fmt.Errorf("jwt authority %q: %v", k.KeyId, err)
		}
	}
	return nil
}

// AppendBundle implements bundle/v1 for admins.
func (s *BundleService) AppendBundle(ctx context.Context, req *bundlev1.AppendBundleRequest) (*types.Bundle, error) {
	if len(req.X509Authorities) == 0 && len(req.JwtAuthorities) == 0 {
		return nil, status.Error(codes.InvalidArgument, "no authorities to append")
	}
	if err := validateAuthorities(req.X509Authorities, req.JwtAuthorities); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "failed to convert bundle: %v", err)
	}
	b, err := s.api.cfg.DataStore.AppendBundle(ctx, &types.Bundle{
		TrustDomain: s.api.cfg.TrustDomain.Name(), X509Authorities: req.X509Authorities, JwtAuthorities: req.JwtAuthorities,
	})
	s.api.bundle.invalidate()
	if err != nil {
		return nil, dsError("append bundle", err)
	}
	return applyBundleMask(b, req.OutputMask), nil
}

// federatedTD validates a federated trust domain name and returns the key
// the datastore uses (the bare name, as on the wire).
func (s *BundleService) federatedTD(name string) (string, error) {
	td, err := spiffeid.TrustDomainFromString(name)
	if err != nil {
		return "", status.Errorf(codes.InvalidArgument, "invalid trust domain %q: %v", name, err)
	}
	if td == s.api.cfg.TrustDomain {
		return "", status.Errorf(codes.InvalidArgument, "%q is this server's own trust domain, not a federated one", name)
	}
	return td.Name(), nil
}

func (s *BundleService) federatedBundle(b *types.Bundle) (*types.Bundle, error) {
	if b == nil {
		return nil, status.Error(codes.InvalidArgument, "missing bundle")
	}
	td, err := s.federatedTD(b.TrustDomain)
	if err != nil {
		return nil, err
	}
	if err := validateAuthorities(b.X509Authorities, b.JwtAuthorities); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "failed to convert bundle: %v", err)
	}
	return &types.Bundle{TrustDomain: td, X509Authorities: b.X509Authorities, JwtAuthorities: b.JwtAuthorities, RefreshHint: b.RefreshHint, SequenceNumber: b.SequenceNumber}, nil
}

// ListFederatedBundles implements bundle/v1.
func (s *BundleService) ListFederatedBundles(ctx context.Context, req *bundlev1.ListFederatedBundlesRequest) (*bundlev1.ListFederatedBundlesResponse, error) {
	bundles, _, err := s.api.cfg.DataStore.ListBundles(ctx, nil)
	if err != nil {
		return nil, dsError("list bundles", err)
	}
	resp := &bundlev1.ListFederatedBundlesResponse{}
	own := s.api.cfg.TrustDomain.Name()
	for _, b := range bundles {
		if b.TrustDomain != own {
			resp.Bundles = append(resp.Bundles, applyBundleMask(b, req.OutputMask))
		}
	}
	return resp, nil
}

// GetFederatedBundle implements bundle/v1.
func (s *BundleService) GetFederatedBundle(ctx context.Context, req *bundlev1.GetFederatedBundleRequest) (*types.Bundle, error) {
	td, err := s.federatedTD(req.TrustDomain)
	if err != nil {
		return nil, err
	}
	b, err := s.api.cfg.DataStore.FetchBundle(ctx, td)
	if c, ok := CallerFromContext(ctx); ok && c.Role == RoleAgent {
		// What the agent now holds, for its notice stream.
		switch {
		case err == nil:
			s.api.notices.servedFederated(c.ID.String(), td, bundleDigest(b))
		case errors.Is(err, datastore.ErrNotFound):
			s.api.notices.servedFederated(c.ID.String(), td, 0)
		}
	}
	if err != nil {
		return nil, dsError("bundle for "+req.TrustDomain, err)
	}
	return applyBundleMask(b, req.OutputMask), nil
}

// BatchCreateFederatedBundle implements bundle/v1.
func (s *BundleService) BatchCreateFederatedBundle(ctx context.Context, req *bundlev1.BatchCreateFederatedBundleRequest) (*bundlev1.BatchCreateFederatedBundleResponse, error) {
	if len(req.Bundle) > MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "too many bundles: %d, at most %d", len(req.Bundle), MaxBatch)
	}
	resp := &bundlev1.BatchCreateFederatedBundleResponse{}
	defer s.api.notices.changed()
	for _, in := range req.Bundle {
		b, err := s.federatedBundle(in)
		if err == nil {
			b, err = s.api.cfg.DataStore.CreateBundle(ctx, b)
			err = wrapDS("create bundle", err)
		}
		resp.Results = append(resp.Results, &bundlev1.BatchCreateFederatedBundleResponse_Result{Status: toStatus(err), Bundle: maskIfOK(b, err, req.OutputMask)})
	}
	return resp, nil
}

// BatchUpdateFederatedBundle implements bundle/v1.
func (s *BundleService) BatchUpdateFederatedBundle(ctx context.Context, req *bundlev1.BatchUpdateFederatedBundleRequest) (*bundlev1.BatchUpdateFederatedBundleResponse, error) {
	if len(req.Bundle) > MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "too many bundles: %d, at most %d", len(req.Bundle), MaxBatch)
	}
	resp := &bundlev1.BatchUpdateFederatedBundleResponse{}
	defer s.api.notices.changed()
	for _, in := range req.Bundle {
		b, err := s.federatedBundle(in)
		if err == nil {
			b, err = s.api.cfg.DataStore.UpdateBundle(ctx, b, req.InputMask)
			err = wrapDS("update bundle", err)
		}
		resp.Results = append(resp.Results, &bundlev1.BatchUpdateFederatedBundleResponse_Result{Status: toStatus(err), Bundle: maskIfOK(b, err, req.OutputMask)})
	}
	return resp, nil
}

// BatchSetFederatedBundle implements bundle/v1.
func (s *BundleService) BatchSetFederatedBundle(ctx context.Context, req *bundlev1.BatchSetFederatedBundleRequest) (*bundlev1.BatchSetFederatedBundleResponse, error) {
	if len(req.Bundle) > MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "too many bundles: %d, at most %d", len(req.Bundle), MaxBatch)
	}
	resp := &bundlev1.BatchSetFederatedBundleResponse{}
	// The agents whose entries federate with a changed domain are told
	// at once (the feed's look would see it within a second anyway).
	defer s.api.notices.changed()
	for _, in := range req.Bundle {
		b, err := s.federatedBundle(in)
		if err == nil {
			b, err = s.api.cfg.DataStore.SetBundle(ctx, b)
			err = wrapDS("set bundle", err)
		}
		resp.Results = append(resp.Results, &bundlev1.BatchSetFederatedBundleResponse_Result{Status: toStatus(err), Bundle: maskIfOK(b, err, req.OutputMask)})
	}
	return resp, nil
}

// BatchDeleteFederatedBundle implements bundle/v1.
func (s *BundleService) BatchDeleteFederatedBundle(ctx context.Context, req *bundlev1.BatchDeleteFederatedBundleRequest) (*bundlev1.BatchDeleteFederatedBundleResponse, error) {
	if len(req.TrustDomains) > MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "too many trust domains: %d, at most %d", len(req.TrustDomains), MaxBatch)
	}
	resp := &bundlev1.BatchDeleteFederatedBundleResponse{}
	defer s.api.notices.changed()
	for _, name := range req.TrustDomains {
		td, err := s.federatedTD(name)
		if err == nil {
			err = wrapDS("delete bundle", s.api.cfg.DataStore.DeleteBundle(ctx, td))
		}
		resp.Results = append(resp.Results, &bundlev1.BatchDeleteFederatedBundleResponse_Result{Status: toStatus(err), TrustDomain: name})
	}
	return resp, nil
}

func wrapDS(what string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !errors.Is(err, datastore.ErrNotFound) && !errors.Is(err, datastore.ErrAlreadyExists) {
		return err
	}
	return dsError(what, err)
}

func maskIfOK(b *types.Bundle, err error, m *types.BundleMask) *types.Bundle {
	if err != nil || b == nil {
		return nil
	}
	return applyBundleMask(b, m)
}
