// Package external makes an SVIDStore plugin written against the SPIRE
// plugin SDK (spire.plugin.agent.svidstore.v1) an svidstore.Store. It
// converts requests as SPIRE v1.13.3's facade does (DER certificates, a
// PKCS#8 key, each federated bundle as concatenated DER, expiry in Unix
// seconds) and reports errors as gRPC statuses prefixed
// "svidstore(<name>): ", keeping the plugin's codes.
package external

import (
	"context"
	"crypto/x509"

	"github.com/spiffe-hw/spire-hw/agent/svidstore"
	"github.com/spiffe-hw/spire-hw/plugin/facade"
	svidstorev1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/svidstore/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// Store is an external SVIDStore.
type Store struct {
	name   string
	f      facade.Facade
	client svidstorev1.SVIDStoreClient
}

var _ svidstore.Store = (*Store)(nil)

// New returns a Store over the plugin behind conn, loaded under name.
func New(conn grpc.ClientConnInterface, name string) *Store {
	return &Store{name: name, f: facade.Facade{Type: "svidstore", Name: name}, client: svidstorev1.NewSVIDStoreClient(conn)}
}

// Name is the plugin's name.
func (s *Store) Name() string { return s.name }

// PutX509SVID hands the SVID to the plugin.
func (s *Store) PutX509SVID(ctx context.Context, svid *svidstore.X509SVID) error {
	if svid == nil {
		return s.f.Errorf(codes.InvalidArgument, "missing SVID")
	}
	key, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		return s.f.Errorf(codes.InvalidArgument, "failed to marshal key: %v", err)
	}
	federated := make(map[string][]byte, len(svid.FederatedBundles))
	for td, certs := range svid.FederatedBundles {
		federated[td] = concatDER(certs)
	}
	_, err = s.client.PutX509SVID(ctx, &svidstorev1.PutX509SVIDRequest{
		Svid: &svidstorev1.X509SVID{
			SpiffeID:   svid.SPIFFEID.String(),
			CertChain:  rawCerts(svid.CertChain),
			PrivateKey: key,
			Bundle:     rawCerts(svid.Bundle),
			ExpiresAt:  svid.ExpiresAt.Unix(),
		},
		Metadata:         svid.Metadata,
		FederatedBundles: federated,
	})
	return s.f.WrapErr(err)
}

// DeleteX509SVID asks the plugin to remove the SVID the metadata designates.
func (s *Store) DeleteX509SVID(ctx context.Context, metadata []string) error {
	_, err := s.client.DeleteX509SVID(ctx, &svidstorev1.DeleteX509SVIDRequest{Metadata: metadata})
	return s.f.WrapErr(err)
}

func rawCerts(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, 0, len(certs))
	for _, c := range certs {
		out = append(out, c.Raw)
	}
	return out
}

func concatDER(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}
