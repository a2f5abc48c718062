package api

import (
	"fmt"
	"strings"

	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	loggerv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/logger/v1"
	trustdomainv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/trustdomain/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// serviceAuditFields are the request fields SPIRE's agent, bundle, entry,
// logger and trustdomain services add to their audit lines (SPIRE's field
// names: trust_domain_id, entry_id, new_log_level, the filters of the
// List and Count calls, and the authorities of an append or a publish by
// index and SHA-256, never the keys themselves).
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
	case *agentv1.ListAgentsRequest:
		if f := r.Filter; f != nil {
			return agentFilterFields(f.ByAttestationType, f.BySelectorMatch, f.ByBanned, f.ByCanReattest)
		}
	case *agentv1.CountAgentsRequest:
		if f := r.Filter; f != nil {
			return agentFilterFields(f.ByAttestationType, f.BySelectorMatch, f.ByBanned, f.ByCanReattest)
		}
	case *entryv1.ListEntriesRequest:
		if f := r.Filter; f != nil {
			return a.entryFilterFields(f.ByHint, f.ByParentId, f.BySpiffeId, f.BySelectors, f.ByFederatesWith, f.ByDownstream)
		}
	case *entryv1.CountEntriesRequest:
		if f := r.Filter; f != nil {
			return a.entryFilterFields(f.ByHint, f.ByParentId, f.BySpiffeId, f.BySelectors, f.ByFederatesWith, f.ByDownstream)
		}
	}
	return nil
}

// agentFilterFields are the filter fields SPIRE's ListAgents and
// CountAgents audit (not by_expires_before, which SPIRE leaves out too).
func agentFilterFields(attType string, sels *types.SelectorMatch, banned, reattest *wrapperspb.BoolValue) []any {
	var f []any
	if attType != "" {
		f = append(f, "node_attestor_type", attType)
	}
	if banned != nil {
		f = append(f, "by_banned", banned.Value)
	}
	if reattest != nil {
		f = append(f, "by_can_reattest", reattest.Value)
	}
	if sels != nil {
		f = append(f, "by_selector_match", sels.Match.String(), "by_selectors", selectorsField(sels.Selectors))
	}
	return f
}

// entryFilterFields are the filter fields SPIRE's ListEntries and
// CountEntries audit. An ID filter outside the trust domain is left out,
// as SPIRE leaves out one it cannot parse into it; the call's error says
// why.
func (a *API) entryFilterFields(hint *wrapperspb.StringValue, parent, id *types.SPIFFEID, sels *types.SelectorMatch,
	fed *types.FederatesWithMatch, downstream *wrapperspb.BoolValue) []any {
	var f []any
	if hint != nil {
		f = append(f, "hint", hint.Value)
	}
	if p, err := a.idFromProto("parent_id", parent); parent != nil && err == nil {
		f = append(f, "parent_id", p.String())
	}
	if p, err := a.idFromProto("spiffe_id", id); id != nil && err == nil {
		f = append(f, "spiffe_id", p.String())
	}
	if sels != nil {
		f = append(f, "by_selector_match", sels.Match.String(), "by_selectors", selectorsField(sels.Selectors))
	}
	if fed != nil {
		f = append(f, "federates_with_match", fed.Match.String(), "federates_with", strings.Join(fed.TrustDomains, ","))
	}
	if downstream != nil {
		// SPIRE logs a pointer to the value here, which its JSON logs
		// render as the value: the value is logged.
		f = append(f, "downstream", downstream.Value)
	}
	return f
}

// selectorsField is SPIRE's SelectorFieldFromProto: type:value, joined by
// commas.
func selectorsField(sels []*types.Selector) string {
	out := make([]string, 0, len(sels))
	for _, s := range sels {
		out = append(out, s.GetType()+":"+s.GetValue())
	}
	return strings.Join(out, ",")
}

// bundleFields is SPIRE's FieldsFromBundleProto: the trust domain, and the
// refresh hint, sequence number and authorities that mask selects (all
// with a nil mask).
func bundleFields(b *types.Bundle, mask *types.BundleMask) []any {
	if b == nil {
		return nil
	}
	f := []any{"trust_domain_id", b.TrustDomain}
	if mask == nil || mask.RefreshHint {
		f = append(f, "refresh_hint", b.RefreshHint)
	}
	if mask == nil || mask.SequenceNumber {
		f = append(f, "sequence_number", b.SequenceNumber)
	}
	if mask == nil || mask.JwtAuthorities {
		f = append(f, jwtAuthorityFields(b.JwtAuthorities)...)
	}
	if mask == nil || mask.X509Authorities {
		f = append(f, x509AuthorityFields(b.X509Authorities)...)
	}
	return f
}

// jwtAuthorityFields is SPIRE's FieldsFromJwtAuthoritiesProto: each
// authority's expiry, key ID and public key hash, suffixed by its index.
func jwtAuthorityFields(keys []*types.JWTKey) []any {
	var f []any
	for i, k := range keys {
		f = append(f, fmt.Sprintf("jwt_authority_expires_at.%d", i), k.GetExpiresAt(),
			fmt.Sprintf("jwt_authority_key_id.%d", i), k.GetKeyId(),
			fmt.Sprintf("jwt_authority_public_key_sha256.%d", i), hashBytes(k.GetPublicKey()))
	}
	return f
}

// x509AuthorityFields is SPIRE's FieldsFromX509AuthoritiesProto.
func x509AuthorityFields(certs []*types.X509Certificate) []any {
	var f []any
	for i, c := range certs {
		f = append(f, fmt.Sprintf("x509_authorities_asn1_sha256.%d", i), hashBytes(c.GetAsn1()))
	}
	return f
}
