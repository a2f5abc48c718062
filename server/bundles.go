package server

import (
	"context"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// bundleSource serves the server's own X.509 trust bundle from the
// datastore, for verifying client SVIDs. It caches for a short time so a TLS
// handshake does not always cost a query, yet a newly published CA is
// trusted within seconds (several servers may share one database).
type bundleSource struct {
	ds  datastore.DataStore
	td  spiffeid.TrustDomain
	ttl time.Duration

	mu      sync.Mutex
	cached  *x509bundle.Bundle
	fetched time.Time
}

func newBundleSource(ds datastore.DataStore, td spiffeid.TrustDomain) *bundleSource {
	return &bundleSource{ds: ds, td: td, ttl: 2 * time.Second}
}

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (b *bundleSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != b.td {
		return nil, fmt.Errorf("server: no bundle for trust domain %q", td)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cached != nil && time.Since(b.fetched) < b.ttl {
		return b.cached, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pb, err := b.ds.FetchBundle(ctx, td.Name())
	if err != nil {
		if b.cached != nil {
			return b.cached, nil
		}
		return nil, fmt.Errorf("server: fetch bundle: %w", err)
	}
	bundle := x509bundle.New(td)
	for _, a := range pb.X509Authorities {
		c, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			return nil, fmt.Errorf("server: bundle holds a malformed certificate: %w", err)
		}
		bundle.AddX509Authority(c)
	}
	b.cached, b.fetched = bundle, time.Now()
	return bundle, nil
}
