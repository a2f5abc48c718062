// Package pluginbundle converts a trust bundle as the server stores it (the
// SPIRE API SDK's types.Bundle) to the form the plugin SDK sends to plugins
// (plugintypes.Bundle). The Notifier and BundlePublisher adapters and the
// IdentityProvider host service all hand plugins bundles, and they must hand
// them the same thing, checked the same way.
package pluginbundle

import (
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	plugintypes "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/types"
)

// FromAPI converts b to the plugin SDK's form, with the checks SPIRE applies
// on the way (a valid trust domain name, parsable certificates, JWT keys with
// an ID and a parsable public key), so a plugin never receives what it could
// not parse either. A nil bundle stays nil.
//
// Its errors carry no package prefix: callers put them after SPIRE's
// "bundle is invalid: ", and the message must read as SPIRE's does.
func FromAPI(b *types.Bundle) (*plugintypes.Bundle, error) {
	if b == nil {
		return nil, nil
	}
	td, err := spiffeid.TrustDomainFromString(b.GetTrustDomain())
	if err != nil {
		return nil, fmt.Errorf("malformed trust domain: %w", err)
	}
	out := &plugintypes.Bundle{
		TrustDomain:    td.Name(),
		RefreshHint:    b.GetRefreshHint(),
		SequenceNumber: b.GetSequenceNumber(),
	}
	for _, a := range b.GetX509Authorities() {
		if len(a.GetAsn1()) == 0 {
			return nil, errors.New("invalid X.509 authority: missing X.509 certificate data")
		}
		if _, err := x509.ParseCertificate(a.GetAsn1()); err != nil {
			return nil, fmt.Errorf("invalid X.509 authority: failed to parse X.509 certificate data: %w", err)
		}
		out.X509Authorities = append(out.X509Authorities, &plugintypes.X509Certificate{Asn1: a.GetAsn1(), Tainted: a.GetTainted()})
	}
	for _, k := range b.GetJwtAuthorities() {
		switch {
		case k.GetKeyId() == "":
			return nil, errors.New("invalid JWT authority: missing key ID for JWT key")
		case len(k.GetPublicKey()) == 0:
			return nil, fmt.Errorf("invalid JWT authority: missing public key for JWT key %q", k.GetKeyId())
		}
		if _, err := x509.ParsePKIXPublicKey(k.GetPublicKey()); err != nil {
			return nil, fmt.Errorf("invalid JWT authority: failed to unmarshal public key for JWT key %q: %w", k.GetKeyId(), err)
		}
		out.JwtAuthorities = append(out.JwtAuthorities, &plugintypes.JWTKey{
			KeyId: k.GetKeyId(), PublicKey: k.GetPublicKey(), ExpiresAt: k.GetExpiresAt(), Tainted: k.GetTainted(),
		})
	}
	return out, nil
}
