package api

import (
	trustdomainv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/trustdomain/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// trustDomainBatchItems splits a successful trustdomain/v1 batch into its
// items for the audit log, one line each with SPIRE's fields; nil for any
// other call.
func trustDomainBatchItems(req, resp any) []auditItem {
	items := []auditItem{} // an empty batch: no line, as in SPIRE
	switch r := resp.(type) {
	case *trustdomainv1.BatchCreateFederationRelationshipResponse:
		q, _ := req.(*trustdomainv1.BatchCreateFederationRelationshipRequest)
		for i, res := range r.Results {
			items = append(items, auditItem{relationshipFields(item(q.GetFederationRelationships(), i), nil), res.Status})
		}
	case *trustdomainv1.BatchUpdateFederationRelationshipResponse:
		q, _ := req.(*trustdomainv1.BatchUpdateFederationRelationshipRequest)
		for i, res := range r.Results {
			items = append(items, auditItem{relationshipFields(item(q.GetFederationRelationships(), i), q.GetInputMask()), res.Status})
		}
	case *trustdomainv1.BatchDeleteFederationRelationshipResponse:
		q, _ := req.(*trustdomainv1.BatchDeleteFederationRelationshipRequest)
		for i, res := range r.Results {
			items = append(items, auditItem{[]any{"trust_domain_id", item(q.GetTrustDomains(), i)}, res.Status})
		}
	default:
		return nil
	}
	return items
}

// relationshipFields are SPIRE's audit fields of a relationship in a
// request, as given (not as normalized): the trust domain, and the URL,
// profile and bundle (its fields prefixed "bundle_") that mask selects,
// all of them with a nil mask.
func relationshipFields(fr *types.FederationRelationship, mask *types.FederationRelationshipMask) []any {
	if fr == nil {
		return nil
	}
	if mask == nil {
		mask = allRelationshipFields()
	}
	var f []any
	if fr.TrustDomain != "" {
		f = append(f, "trust_domain_id", fr.TrustDomain)
	}
	if mask.BundleEndpointUrl {
		f = append(f, "bundle_endpoint_url", fr.BundleEndpointUrl)
	}
	if mask.BundleEndpointProfile {
		switch p := fr.BundleEndpointProfile.(type) {
		case *types.FederationRelationship_HttpsWeb:
			f = append(f, "bundle_endpoint_profile", profileHTTPSWeb)
		case *types.FederationRelationship_HttpsSpiffe:
			f = append(f, "bundle_endpoint_profile", profileHTTPSSPIFFE, "endpoint_spiffe_id", p.HttpsSpiffe.GetEndpointSpiffeId())
		}
	}
	if mask.TrustDomainBundle && fr.TrustDomainBundle != nil {
		bf := bundleFields(fr.TrustDomainBundle, nil)
		for i := 0; i+1 < len(bf); i += 2 {
			f = append(f, "bundle_"+bf[i].(string), bf[i+1])
		}
	}
	return f
}
