package external_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/svidstore"
	"github.com/spiffe-hw/spire-hw/agent/svidstore/external"
	"github.com/spiffe-hw/spire-hw/internal/grpctest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	svidstorev1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/svidstore/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// plugin is an SDK SVIDStore that records what it is given.
type plugin struct {
	svidstorev1.UnimplementedSVIDStoreServer
	mu      sync.Mutex
	puts    []*svidstorev1.PutX509SVIDRequest
	deletes [][]string
	fail    error
}

func (p *plugin) PutX509SVID(_ context.Context, req *svidstorev1.PutX509SVIDRequest) (*svidstorev1.PutX509SVIDResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return nil, p.fail
	}
	p.puts = append(p.puts, req)
	return &svidstorev1.PutX509SVIDResponse{}, nil
}

func (p *plugin) DeleteX509SVID(_ context.Context, req *svidstorev1.DeleteX509SVIDRequest) (*svidstorev1.DeleteX509SVIDResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return nil, p.fail
	}
	p.deletes = append(p.deletes, req.Metadata)
	return &svidstorev1.DeleteX509SVIDResponse{}, nil
}

func serve(t *testing.T, p *plugin) grpc.ClientConnInterface {
	t.Helper()
	return grpctest.Serve(t, func(srv *grpc.Server) { svidstorev1.RegisterSVIDStoreServer(srv, p) })
}

// ca makes a self-signed CA for td and a leaf for id signed by it.
func ca(t *testing.T, td string, id spiffeid.ID) (root, leaf *x509.Certificate, leafKey *ecdsa.PrivateKey) {
	t.Helper()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse("spiffe://" + td)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: td}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ = x509.ParseCertificate(der)
	leafKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	lt := &x509.Certificate{SerialNumber: big.NewInt(2), URIs: []*url.URL{id.URL()}, KeyUsage: x509.KeyUsageDigitalSignature,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(30 * time.Minute)}
	der, err = x509.CreateCertificate(rand.Reader, lt, root, leafKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ = x509.ParseCertificate(der)
	return root, leaf, leafKey
}

func TestPutX509SVID(t *testing.T) {
	p := &plugin{}
	s := external.New(serve(t, p), "fake")
	if s.Name() != "fake" {
		t.Fatalf("Name = %q", s.Name())
	}
	id := spiffeid.RequireFromString("spiffe://example.org/db")
	root, leaf, key := ca(t, "example.org", id)
	fedA, _, _ := ca(t, "a.test", spiffeid.RequireFromString("spiffe://a.test/x"))
	fedB, _, _ := ca(t, "a.test", spiffeid.RequireFromString("spiffe://a.test/y"))
	err := s.PutX509SVID(context.Background(), &svidstore.X509SVID{
		SPIFFEID: id, CertChain: []*x509.Certificate{leaf}, PrivateKey: key, Bundle: []*x509.Certificate{root},
		ExpiresAt: leaf.NotAfter, Metadata: []string{"secretname:db"},
		FederatedBundles: map[string][]*x509.Certificate{"a.test": {fedA, fedB}},
	})
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.puts) != 1 {
		t.Fatalf("%d puts", len(p.puts))
	}
	req := p.puts[0]
	if req.Svid.SpiffeID != id.String() || req.Svid.ExpiresAt != leaf.NotAfter.Unix() || !slices.Equal(req.Metadata, []string{"secretname:db"}) {
		t.Fatalf("request %v", req)
	}
	// What the plugin got is a usable SVID: chain and key parse together and
	// verify against the bundle it got.
	var chain []byte
	for _, c := range req.Svid.CertChain {
		chain = append(chain, c...)
	}
	svid, err := x509svid.ParseRaw(chain, req.Svid.PrivateKey)
	if err != nil {
		t.Fatalf("stored SVID unusable: %v", err)
	}
	if len(req.Svid.Bundle) != 1 {
		t.Fatalf("bundle has %d certs", len(req.Svid.Bundle))
	}
	bundleRoot, err := x509.ParseCertificate(req.Svid.Bundle[0])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(bundleRoot)
	if _, err := svid.Certificates[0].Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("stored SVID does not verify against stored bundle: %v", err)
	}
	fed, err := x509.ParseCertificates(req.FederatedBundles["a.test"])
	if err != nil || len(fed) != 2 || !fed[0].Equal(fedA) || !fed[1].Equal(fedB) {
		t.Fatalf("federated bundle: %d certs, %v", len(fed), err)
	}
}

func TestErrors(t *testing.T) {
	p := &plugin{fail: status.Error(codes.PermissionDenied, "fake: no access")}
	s := external.New(serve(t, p), "fake")
	id := spiffeid.RequireFromString("spiffe://example.org/db")
	_, leaf, key := ca(t, "example.org", id)
	tests := []struct {
		name     string
		call     func() error
		wantCode codes.Code
		wantMsg  string
	}{
		{"put error keeps code", func() error {
			return s.PutX509SVID(context.Background(), &svidstore.X509SVID{SPIFFEID: id, CertChain: []*x509.Certificate{leaf}, PrivateKey: key})
		}, codes.PermissionDenied, "svidstore(fake): no access"},
		{"delete error keeps code", func() error { return s.DeleteX509SVID(context.Background(), []string{"a:b"}) }, codes.PermissionDenied, "svidstore(fake): no access"},
		{"missing SVID", func() error { return s.PutX509SVID(context.Background(), nil) }, codes.InvalidArgument, "svidstore(fake): missing SVID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, ok := status.FromError(tt.call())
			if !ok || st.Code() != tt.wantCode || st.Message() != tt.wantMsg {
				t.Fatalf("got %v, want %v %q", st, tt.wantCode, tt.wantMsg)
			}
		})
	}
	p.mu.Lock()
	p.fail = nil
	p.mu.Unlock()
	if err := s.DeleteX509SVID(context.Background(), []string{"secretname:db"}); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.deletes) != 1 || !slices.Equal(p.deletes[0], []string{"secretname:db"}) {
		t.Fatalf("deletes %v", p.deletes)
	}
}
