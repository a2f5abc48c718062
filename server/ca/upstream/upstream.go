// Package upstream defines the UpstreamAuthority the CA manager uses to have
// its CA certificates signed by an existing PKI instead of self-signing, and
// the "disk" implementation (SPIRE's disk UpstreamAuthority: a CA certificate
// and key in PEM files, plus an optional trust bundle file).
package upstream

import (
	"context"
	"crypto/x509"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
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

// JWTKeyPublisher is implemented by an Authority that also federates JWT
// signing keys, as SPIRE's UpstreamAuthority PublishJWTKey does: the CA
// hands it each JWT key it prepares, and puts the keys the upstream answers
// with (the upstream's JWT authorities, normally including this one) into
// the trust bundle instead of its own key alone.
type JWTKeyPublisher interface {
	// PublishJWTKey publishes key upstream and returns the upstream's JWT
	// keys. An upstream that cannot publish JWT keys returns an error
	// wrapping errors.ErrUnsupported; the CA then publishes key locally
	// only.
	PublishJWTKey(ctx context.Context, key *types.JWTKey) ([]*types.JWTKey, error)
}
