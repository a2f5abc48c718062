package client

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// ParseChain parses a DER certificate chain as sent by the server, leaf
// first.
func ParseChain(der [][]byte) ([]*x509.Certificate, error) {
	if len(der) == 0 {
		return nil, errors.New("empty certificate chain")
	}
	chain := make([]*x509.Certificate, 0, len(der))
	for i, d := range der {
		cert, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("certificate %d of chain: %w", i, err)
		}
		chain = append(chain, cert)
	}
	return chain, nil
}

// ParseBundle converts the server's bundle message for td into a SPIFFE
// bundle with its X.509 and JWT authorities. A bundle naming another trust
// domain is refused so that a server cannot substitute one bundle for
// another.
func ParseBundle(td spiffeid.TrustDomain, b *types.Bundle) (*spiffebundle.Bundle, error) {
	if b == nil {
		return nil, errors.New("nil bundle")
	}
	if b.TrustDomain != td.Name() {
		return nil, fmt.Errorf("bundle is for trust domain %q, want %q", b.TrustDomain, td.Name())
	}
	sb := spiffebundle.New(td)
	for i, a := range b.X509Authorities {
		cert, err := x509.ParseCertificate(a.GetAsn1())
		if err != nil {
			return nil, fmt.Errorf("x509 authority %d: %w", i, err)
		}
		sb.AddX509Authority(cert)
	}
	for i, k := range b.JwtAuthorities {
		if k.GetKeyId() == "" {
			return nil, fmt.Errorf("jwt authority %d: empty key ID", i)
		}
		pub, err := x509.ParsePKIXPublicKey(k.GetPublicKey())
		if err != nil {
			return nil, fmt.Errorf("jwt authority %q: %w", k.GetKeyId(), err)
		}
		if err := sb.AddJWTAuthority(k.GetKeyId(), pub); err != nil {
			return nil, fmt.Errorf("jwt authority %q: %w", k.GetKeyId(), err)
		}
	}
	if b.RefreshHint > 0 && b.RefreshHint < 1<<31 { // larger hints are nonsense and would overflow
		sb.SetRefreshHint(time.Duration(b.RefreshHint) * time.Second)
	}
	sb.SetSequenceNumber(b.SequenceNumber)
	if len(sb.X509Authorities()) == 0 {
		return nil, errors.New("bundle has no x509 authorities")
	}
	return sb, nil
}
