package cli

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// FuzzParseFederationJSON feeds arbitrary -data files to the parser: it
// must not panic, and every relationship it accepts has a trust domain,
// a URL and a known profile (https_spiffe with a valid endpoint ID), and
// any bundle is for the trust domain SPIRE's CLI reads it for.
func FuzzParseFederationJSON(f *testing.F) {
	f.Add([]byte(`{"federationRelationships":[{"trustDomain":"td-1.org","bundleEndpointURL":"https://td-1.org/bundle","bundleEndpointProfile":"https_web"}]}`))
	f.Add([]byte(`{"federationRelationships":[{"trustDomain":"td-2.org","bundleEndpointURL":"https://td-2.org/b","bundleEndpointProfile":"https_spiffe","endpointSPIFFEID":"spiffe://other.org/b","trustDomainBundle":"-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----","trustDomainBundleFormat":"pem"}]}`))
	f.Add([]byte(`{"federationRelationships":[{"trustDomain":"td-4.org","bundleEndpointURL":"https://td-4.org/b","bundleEndpointProfile":"https_spiffe","endpointSpiffeId":"spiffe://td-4.org/b","trustDomainBundleFormat":"spiffe","trustDomainBundle":{"keys":[{"use":"jwt-svid","kty":"EC","kid":"K","crv":"P-256","x":"fK-wKTnKL7KFLM27lqq5DC-bxrVaH6rDV-IcCSEOeL4","y":"wq-g3TQWxYlV51TCPH030yXsRxvujD4hUUaIQrXk4KI"}]}}]}`))
	f.Add([]byte(`{"federationRelationships":[null,{}]}`))
	f.Add([]byte(`{"FEDERATIONRELATIONSHIPS":[{"TRUSTDOMAIN":"a","bundleendpointurl":"x","bundleEndpointProfile":"https_web","trustDomainBundle":1,"trustDomainBundleFormat":"jwks"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		frs, err := ParseFederationJSON(data)
		if err != nil {
			return
		}
		for _, fr := range frs {
			if fr.TrustDomain == "" || fr.BundleEndpointUrl == "" {
				t.Fatalf("accepted a relationship without trust domain or URL: %v", fr)
			}
			bundleTD := fr.TrustDomain
			switch {
			case fr.GetHttpsWeb() != nil:
			case fr.GetHttpsSpiffe() != nil:
				id, err := spiffeid.FromString(fr.GetHttpsSpiffe().EndpointSpiffeId)
				if err != nil {
					t.Fatalf("accepted endpoint SPIFFE ID %q: %v", fr.GetHttpsSpiffe().EndpointSpiffeId, err)
				}
				bundleTD = id.TrustDomain().Name()
			default:
				t.Fatalf("accepted a relationship without profile: %v", fr)
			}
			if b := fr.TrustDomainBundle; b != nil && b.TrustDomain != bundleTD {
				t.Fatalf("bundle read for %q, want %q", b.TrustDomain, bundleTD)
			}
		}
	})
}
