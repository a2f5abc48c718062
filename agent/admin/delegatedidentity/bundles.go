package delegatedidentity

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/go-jose/go-jose/v4"
	delegatedidentityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/delegatedidentity/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/agent/cache"
)

// SubscribeToX509Bundles streams the X.509 authorities of every bundle
// the agent holds, its own and all federated ones, keyed by trust domain
// ID (spiffe://td), concatenated DER as SPIRE sends them: the current set
// at once, then the whole set again on every change. A trust domain whose
// bundle the agent drops leaves the set (SPIRE keeps sending the last one
// it saw).
func (s *Service) SubscribeToX509Bundles(_ *delegatedidentityv1.SubscribeToX509BundlesRequest, stream delegatedidentityv1.DelegatedIdentity_SubscribeToX509BundlesServer) error {
	return streamBundles(s, stream.Context(), "SubscribeToX509Bundles", func(b cache.Bundles) error {
		certs := make(map[string][]byte, len(b))
		for td, bundle := range b {
			var der []byte
			for _, c := range bundle.X509Authorities() {
				der = append(der, c.Raw...)
			}
			if der == nil {
				der = []byte{}
			}
			certs[td.IDString()] = der
		}
		return stream.Send(&delegatedidentityv1.SubscribeToX509BundlesResponse{CaCertificates: certs})
	})
}

// SubscribeToJWTBundles streams the JWT authorities of every bundle the
// agent holds as a standard JWKS per trust domain ID, SPIRE's format
// (bundleutil with NoX509SVIDKeys and StandardJWKS: keys only, indented by
// four spaces), keys in key ID order.
func (s *Service) SubscribeToJWTBundles(_ *delegatedidentityv1.SubscribeToJWTBundlesRequest, stream delegatedidentityv1.DelegatedIdentity_SubscribeToJWTBundlesServer) error {
	return streamBundles(s, stream.Context(), "SubscribeToJWTBundles", func(b cache.Bundles) error {
		out := make(map[string][]byte, len(b))
		for td, bundle := range b {
			jwks, err := marshalJWKS(bundle.JWTAuthorities())
			if err != nil {
				return fmt.Errorf("marshal JWT bundle of %s: %w", td, err)
			}
			out[td.IDString()] = jwks
		}
		return stream.Send(&delegatedidentityv1.SubscribeToJWTBundlesResponse{Bundles: out})
	})
}

// streamBundles serves a bundle stream: authorize, then send every set
// the cache delivers, checking the delegate again before each one after
// the first (SPIRE sends its first at once).
func streamBundles(s *Service, ctx context.Context, method string, send func(cache.Bundles) error) error {
	defer s.begin()()
	c, err := s.authorize(ctx, method)
	if err != nil {
		return err
	}
	release, err := s.openStream(c)
	if err != nil {
		return err
	}
	defer release()
	sub := s.cache.SubscribeToBundles(ctx)
	defer sub.Finish()
	first := true
	for {
		select {
		case b, ok := <-sub.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return status.Error(codes.Unavailable, "subscription closed")
			}
			if !first {
				if err := s.recheck(c); err != nil {
					return err
				}
			}
			first = false
			if err := send(b); err != nil {
				c.log.Error("Failed to send bundle response", "error", err)
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// marshalJWKS renders JWT authorities as SPIRE's agent does.
func marshalJWKS[K any](keys map[string]K) ([]byte, error) {
	kids := make([]string, 0, len(keys))
	for kid := range keys {
		kids = append(kids, kid)
	}
	slices.Sort(kids)
	set := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(keys))}
	for _, kid := range kids {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: keys[kid], KeyID: kid})
	}
	return json.MarshalIndent(set, "", "    ")
}
