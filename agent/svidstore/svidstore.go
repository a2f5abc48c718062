// Package svidstore defines where the agent pushes the X509-SVIDs of entries
// marked store_svid: not to workloads on the Workload API, but to a secrets
// store (a cloud secret manager, a Kubernetes secret) through an SVIDStore
// plugin, as SPIRE's agent does. The external subpackage adapts SPIRE
// plugin SDK SVIDStore plugins.
//
// Which store holds an entry's SVID is told by its selectors, with SPIRE's
// rule: they all have one type, the store's name, and their values are the
// store's metadata (e.g. "aws_secretsmanager:secretname:db-creds").
package svidstore

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// Store is an SVIDStore plugin.
type Store interface {
	// Name is the store's name: the selector type of the entries it holds.
	Name() string
	// PutX509SVID creates or replaces the SVID the metadata designates.
	PutX509SVID(ctx context.Context, svid *X509SVID) error
	// DeleteX509SVID removes the SVID the metadata designates. A gRPC
	// InvalidArgument status means the metadata can never work, so there is
	// nothing to retry.
	DeleteX509SVID(ctx context.Context, metadata []string) error
}

// X509SVID is what a store receives for one entry.
type X509SVID struct {
	// SPIFFEID is the SVID's SPIFFE ID.
	SPIFFEID spiffeid.ID
	// CertChain is the SVID, leaf first, then intermediates.
	CertChain []*x509.Certificate
	// PrivateKey is the SVID's key; it must be exportable (PKCS#8).
	PrivateKey crypto.Signer
	// Bundle holds the X.509 authorities of the agent's trust domain.
	Bundle []*x509.Certificate
	// ExpiresAt is when the SVID expires.
	ExpiresAt time.Time
	// Metadata are the entry's selector values.
	Metadata []string
	// FederatedBundles holds, by trust domain name as the entry lists it,
	// the X.509 authorities of the trust domains it federates with.
	FederatedBundles map[string][]*x509.Certificate
}

// ParseSelectors returns the store an entry's SVID goes to and the metadata
// for it: the selectors' one type and their values, in order.
func ParseSelectors(selectors []*types.Selector) (name string, metadata []string, err error) {
	if len(selectors) == 0 {
		return "", nil, errors.New("svidstore: no selectors found")
	}
	name = selectors[0].GetType()
	for _, s := range selectors {
		if s.GetType() != name {
			return "", nil, errors.New("svidstore: selector contains multiple types")
		}
		metadata = append(metadata, s.GetValue())
	}
	return name, metadata, nil
}
