// Package upstream defines the UpstreamAuthority the CA manager uses to have
// its CA certificates signed by an existing PKI instead of self-signing, and
// the "disk" implementation (SPIRE's disk UpstreamAuthority: a CA certificate
// and key in PEM files, plus an optional trust bundle file).
package upstream

import (
	"context"
	"crypto/x509"
	"time"
)

// Authority signs the server's intermediate CA. The CA manager consumes it;
// one implementation per upstream kind (disk here, an HSM root later).
type Authority interface {
	// MintX509CA signs the CA certificate request csrDER for ttl (the
	// authority may shorten it). chain[0] is the new CA certificate for the
	// CSR's public key, followed by any intermediates needed to reach one of
	// roots; roots are the trust anchors to publish in the trust bundle.
	MintX509CA(ctx context.Context, csrDER []byte, ttl time.Duration) (chain []*x509.Certificate, roots []*x509.Certificate, err error)
}
