package federation

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// MaxBundleSize caps a fetched bundle document. A SPIRE bundle with a
// few dozen authorities is tens of kilobytes; the cap only keeps a hostile
// endpoint from filling the server's memory.
const MaxBundleSize = 4 << 20

// maxRefreshHintSeconds bounds a refresh hint read from a document, so
// that converting it to a time.Duration cannot overflow.
const maxRefreshHintSeconds = 1 << 31

// ParseBundle parses a SPIFFE bundle document served for trust domain td
// and checks what a document cannot prove by itself: it holds X.509
// authorities, and none of them carries a SPIFFE ID of another trust
// domain (SPIRE's CA certificates carry their trust domain's ID), which
// would mean the endpoint serves another trust domain's bundle.
func ParseBundle(td spiffeid.TrustDomain, data []byte) (*spiffebundle.Bundle, error) {
	if len(data) > MaxBundleSize {
		return nil, fmt.Errorf("federation: bundle of %d bytes exceeds the %d-byte limit", len(data), MaxBundleSize)
	}
	b, err := spiffebundle.Parse(td, data)
	if err != nil {
		return nil, fmt.Errorf("federation: malformed bundle: %w", err)
	}
	if hint, ok := b.RefreshHint(); ok && (hint < 0 || hint > maxRefreshHintSeconds*time.Second) {
		return nil, fmt.Errorf("federation: malformed bundle: refresh hint %v out of range", hint)
	}
	if len(b.X509Authorities()) == 0 {
		return nil, errors.New("federation: bundle has no X.509 authorities")
	}
	for _, c := range b.X509Authorities() {
		if err := checkAuthorityDomain(td, c); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// checkAuthorityDomain refuses an authority whose SPIFFE ID names another
// trust domain.
func checkAuthorityDomain(td spiffeid.TrustDomain, c *x509.Certificate) error {
	for _, u := range c.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		id, err := spiffeid.FromURI(u)
		if err != nil {
			return fmt.Errorf("federation: X.509 authority %q has a malformed SPIFFE ID %q: %w", c.Subject, u, err)
		}
		if id.TrustDomain() != td {
			return fmt.Errorf("federation: endpoint served a bundle for trust domain %q, not %q (X.509 authority %q is %s)",
				id.TrustDomain().Name(), td.Name(), c.Subject, id)
		}
	}
	return nil
}

// bundleFromProto converts a stored bundle to go-spiffe's type.
func bundleFromProto(b *types.Bundle) (*spiffebundle.Bundle, error) {
	td, err := spiffeid.TrustDomainFromString(b.GetTrustDomain())
	if err != nil {
		return nil, fmt.Errorf("federation: stored bundle has an invalid trust domain %q: %w", b.GetTrustDomain(), err)
	}
	sb := spiffebundle.New(td)
	for i, a := range b.GetX509Authorities() {
		c, err := x509.ParseCertificate(a.GetAsn1())
		if err != nil {
			return nil, fmt.Errorf("federation: stored bundle of %q: X.509 authority %d: %w", td.Name(), i, err)
		}
		sb.AddX509Authority(c)
	}
	for _, k := range b.GetJwtAuthorities() {
		pub, err := x509.ParsePKIXPublicKey(k.GetPublicKey())
		if err != nil {
			return nil, fmt.Errorf("federation: stored bundle of %q: JWT authority %q: %w", td.Name(), k.GetKeyId(), err)
		}
		if err := sb.AddJWTAuthority(k.GetKeyId(), pub); err != nil {
			return nil, fmt.Errorf("federation: stored bundle of %q: %w", td.Name(), err)
		}
	}
	if h := b.GetRefreshHint(); h > 0 && h < maxRefreshHintSeconds {
		sb.SetRefreshHint(time.Duration(h) * time.Second)
	}
	sb.SetSequenceNumber(b.GetSequenceNumber())
	return sb, nil
}

// bundleToProto converts a fetched bundle to the stored type.
func bundleToProto(sb *spiffebundle.Bundle) (*types.Bundle, error) {
	b := &types.Bundle{TrustDomain: sb.TrustDomain().Name()}
	for _, c := range sb.X509Authorities() {
		b.X509Authorities = append(b.X509Authorities, &types.X509Certificate{Asn1: c.Raw})
	}
	keys := sb.JWTAuthorities()
	for _, kid := range slices.Sorted(maps.Keys(keys)) {
		der, err := marshalPublicKey(keys[kid])
		if err != nil {
			return nil, fmt.Errorf("federation: JWT authority %q: %w", kid, err)
		}
		b.JwtAuthorities = append(b.JwtAuthorities, &types.JWTKey{KeyId: kid, PublicKey: der})
	}
	if h, ok := sb.RefreshHint(); ok {
		b.RefreshHint = int64(h / time.Second)
	}
	if seq, ok := sb.SequenceNumber(); ok {
		b.SequenceNumber = seq
	}
	return b, nil
}

func marshalPublicKey(key crypto.PublicKey) ([]byte, error) {
	return x509.MarshalPKIXPublicKey(key)
}
