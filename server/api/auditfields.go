package api

import (
	"fmt"

	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	loggerv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/logger/v1"
	trustdomainv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/trustdomain/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// serviceAuditFields are the request fields SPIRE's bundle, entry, logger
// and trustdomain services add to their audit lines (SPIRE's field names:
// trust_domain_id, entry_id, new_log_level, and the authorities of an
// append or a publish by index and SHA-256, never the keys themselves).
func (a *API) serviceAuditFields(req any) []any {
	switch r := req.(type) {
	case *bundlev1.GetBundleRequest:
		return []any{"trust_domain_id", a.cfg.TrustDomain.Name()}
	case *bundlev1.GetFederatedBundleRequest:
		return []any{"trust_domain_id", r.TrustDomain}
	case *bundlev1.AppendBundleRequest:
		return append(jwtAuthorityFields(r.JwtAuthorities), x509AuthorityFields(r.X509Authorities)...)
	case *bundlev1.PublishJWTAuthorityRequest:
		if k := r.JwtAuthority; k != nil {
			return []any{"jwt_authority_expires_at", k.ExpiresAt, "jwt_authority_key_id", k.KeyId,
				"jwt_authority_public_key_sha256", hashBytes(k.PublicKey)}
		}
	case *entryv1.GetEntryRequest:
		return []any{"entry_id", r.Id}
	case *loggerv1.SetLogLevelRequest:
		return []any{"new_log_level", r.NewLevel.String()}
	case *trustdomainv1.GetFederationRelationshipRequest:
		return []any{"trust_domain_id", r.TrustDomain}
	case *trustdomainv1.RefreshBundleRequest:
		return []any{"trust_domain_id", r.TrustDomain}
	}
	return nil
}

// jwtAuthorityFields is SPIRE's FieldsFromJwtAuthoritiesProto: each
// authority's expiry, key ID and public key hash, suffixed by its index.
func jwtAuthorityFields(keys []*types.JWTKey) []any {
	var f []any
	for i, k := range keys {
		f = append(f, fmt.Sprintf("jwt_authority_expires_at.%d", i), k.ExpiresAt,
			fmt.Sprintf("jwt_authority_key_id.%d", i), k.KeyId,
			fmt.Sprintf("jwt_authority_public_key_sha256.%d", i), hashBytes(k.PublicKey))
	}
	return f
}

// x509AuthorityFields is SPIRE's FieldsFromX509AuthoritiesProto.
func x509AuthorityFields(certs []*types.X509Certificate) []any {
	var f []any
	for i, c := range certs {
		f = append(f, fmt.Sprintf("x509_authorities_asn1_sha256.%d", i), hashBytes(c.Asn1))
	}
	return f
}
