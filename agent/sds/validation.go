package sds

import (
	"cmp"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// spiffeValidatorName is the extension name of Envoy's SPIFFE certificate
// validator (Envoy 1.18 and later).
const spiffeValidatorName = "envoy.tls.cert_validator.spiffe"

// validationContexts makes the validation context Secrets of one update:
// as Envoy's SPIFFE validator config (one trust bundle per trust domain,
// so that a peer is checked against its own trust domain's authorities) or,
// for older Envoys and when disabled, as plain trusted CAs.
type validationContexts struct {
	spiffe  bool
	bundles map[spiffeid.TrustDomain]*spiffebundle.Bundle
}

func newValidationContexts(upd *cache.WorkloadUpdate, spiffe bool) validationContexts {
	bundles := make(map[spiffeid.TrustDomain]*spiffebundle.Bundle, len(upd.FederatedBundles)+1)
	if upd.Bundle != nil {
		bundles[upd.Bundle.TrustDomain()] = upd.Bundle
	}
	for td, b := range upd.FederatedBundles {
		bundles[td] = b
	}
	return validationContexts{spiffe: spiffe, bundles: bundles}
}

// one is the validation context named name for trust domain td.
func (v validationContexts) one(name string, td spiffeid.TrustDomain) (*anypb.Any, error) {
	b, ok := v.bundles[td]
	if !ok {
		code := codes.Internal
		if v.spiffe {
			code = codes.NotFound
		}
		return nil, status.Errorf(code, "no bundle found for trust domain: %q", td.IDString())
	}
	if !v.spiffe {
		return marshalSecret(&tlsv3.Secret{
			Name: name,
			Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: inline(pemCertificates(b.X509Authorities())),
			}},
		})
	}
	return v.spiffeSecret(name, []*tlsv3.SPIFFECertValidatorConfig_TrustDomain{trustDomain(td, b)})
}

// all is the validation context named name holding every trust domain,
// sorted by name. Plain trusted CAs cannot keep trust domains apart, so
// without the SPIFFE validator it is refused, with SPIRE's error.
func (v validationContexts) all(name string) (*anypb.Any, error) {
	if !v.spiffe {
		return nil, status.Error(codes.Internal, `unable to use "SPIFFE validator" on Envoy below 1.17`)
	}
	tds := make([]*tlsv3.SPIFFECertValidatorConfig_TrustDomain, 0, len(v.bundles))
	for td, b := range v.bundles {
		tds = append(tds, trustDomain(td, b))
	}
	slices.SortFunc(tds, func(a, b *tlsv3.SPIFFECertValidatorConfig_TrustDomain) int { return cmp.Compare(a.Name, b.Name) })
	return v.spiffeSecret(name, tds)
}

func trustDomain(td spiffeid.TrustDomain, b *spiffebundle.Bundle) *tlsv3.SPIFFECertValidatorConfig_TrustDomain {
	return &tlsv3.SPIFFECertValidatorConfig_TrustDomain{Name: td.Name(), TrustBundle: inline(pemCertificates(b.X509Authorities()))}
}

func (v validationContexts) spiffeSecret(name string, tds []*tlsv3.SPIFFECertValidatorConfig_TrustDomain) (*anypb.Any, error) {
	cfg, err := anypb.New(&tlsv3.SPIFFECertValidatorConfig{TrustDomains: tds})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "marshal SPIFFE validator config: %v", err)
	}
	return marshalSecret(&tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			CustomValidatorConfig: &corev3.TypedExtensionConfig{Name: spiffeValidatorName, TypedConfig: cfg},
		}},
	})
}
