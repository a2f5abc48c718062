package hostservice_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/internal/grpctest"
	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe-hw/spire-hw/server/hostservice"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	agentstorev1 "github.com/spiffe/spire-plugin-sdk/proto/spire/hostservice/server/agentstore/v1"
	identityproviderv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/hostservice/server/identityprovider/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// serve hosts services on a real Unix socket, as the plugin broker would.
func serve(t *testing.T, services ...pluginsdk.ServiceServer) *grpc.ClientConn {
	t.Helper()
	return grpctest.Serve(t, func(srv *grpc.Server) {
		for _, s := range services {
			s.RegisterServer(srv)
		}
	})
}

func TestAgentStore(t *testing.T) {
	ds := sqlitetest.Open(t)
	ctx := context.Background()
	known := "spiffe://example.org/spire/agent/x/1"
	if err := ds.CreateAttestedNode(ctx, &datastore.AttestedNode{SPIFFEID: known, AttestationType: "x", CertSerial: "1", CertNotAfter: time.Now().Add(time.Hour).Unix()}); err != nil {
		t.Fatal(err)
	}
	c := agentstorev1.NewAgentStoreClient(serve(t, hostservice.AgentStore(ds)))
	resp, err := c.GetAgentInfo(ctx, &agentstorev1.GetAgentInfoRequest{AgentId: known})
	if err != nil || resp.GetInfo().GetAgentId() != known {
		t.Fatalf("known agent: %v %v", resp, err)
	}
	for _, tc := range []struct {
		id   string
		want codes.Code
	}{
		{"spiffe://example.org/spire/agent/x/2", codes.NotFound},
		{"not a spiffe id", codes.InvalidArgument},
	} {
		if _, err := c.GetAgentInfo(ctx, &agentstorev1.GetAgentInfoRequest{AgentId: tc.id}); status.Code(err) != tc.want {
			t.Errorf("GetAgentInfo(%q) = %v, want %s", tc.id, err, tc.want)
		}
	}
}

func TestIdentityProvider(t *testing.T) {
	ds := sqlitetest.Open(t)
	ctx := context.Background()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ds.SetBundle(ctx, &types.Bundle{TrustDomain: td.Name(), X509Authorities: []*types.X509Certificate{{Asn1: der}}, SequenceNumber: 3}); err != nil {
		t.Fatal(err)
	}
	ip := hostservice.NewIdentityProvider(td, ds)
	c := identityproviderv1.NewIdentityProviderClient(serve(t, ip.Service()))
	if _, err := c.FetchX509Identity(ctx, &identityproviderv1.FetchX509IdentityRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("before the server has an SVID: %v, want FailedPrecondition", err)
	}
	ip.SetIdentity(func() (*tls.Certificate, error) {
		return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
	})
	resp, err := c.FetchX509Identity(ctx, &identityproviderv1.FetchX509IdentityRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := x509.ParsePKCS8PrivateKey(resp.GetIdentity().GetPrivateKey())
	if err != nil || !key.Equal(got) {
		t.Fatalf("private key: %v", err)
	}
	if len(resp.GetIdentity().GetCertChain()) != 1 || resp.GetBundle().GetSequenceNumber() != 3 ||
		len(resp.GetBundle().GetX509Authorities()) != 1 || resp.GetBundle().GetTrustDomain() != "example.org" {
		t.Fatalf("response: %v", resp)
	}
}

// storedBundle is a BundleFetcher holding one bundle, for bundles the SQL
// store would not keep.
type storedBundle struct{ b *types.Bundle }

func (s storedBundle) FetchBundle(context.Context, string) (*types.Bundle, error) { return s.b, nil }

// TestIdentityProviderBadBundle: a stored bundle that does not convert is
// the server's fault, reported as Internal, and the plugin gets no identity.
func TestIdentityProviderBadBundle(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	for _, tc := range []struct {
		name   string
		bundle *types.Bundle
	}{
		{"garbage certificate", &types.Bundle{TrustDomain: td.Name(), X509Authorities: []*types.X509Certificate{{Asn1: []byte("x")}}}},
		{"JWT key without ID", &types.Bundle{TrustDomain: td.Name(), JwtAuthorities: []*types.JWTKey{{PublicKey: []byte("x")}}}},
		{"malformed trust domain", &types.Bundle{TrustDomain: "Not A Domain"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ip := hostservice.NewIdentityProvider(td, storedBundle{tc.bundle})
			ip.SetIdentity(func() (*tls.Certificate, error) {
				return &tls.Certificate{Certificate: [][]byte{{1}}, PrivateKey: key}, nil
			})
			c := identityproviderv1.NewIdentityProviderClient(serve(t, ip.Service()))
			resp, err := c.FetchX509Identity(context.Background(), &identityproviderv1.FetchX509IdentityRequest{})
			if st, _ := status.FromError(err); st.Code() != codes.Internal || resp != nil {
				t.Fatalf("FetchX509Identity = %v, %v; want Internal", resp, err)
			}
		})
	}
}
