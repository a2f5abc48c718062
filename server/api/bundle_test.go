package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/servertest"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	debugv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/debug/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func selfSignedDER(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other.org CA"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestFederatedBundles(t *testing.T) { forEachEngine(t, testFederatedBundles) }

func testFederatedBundles(t *testing.T, opts servertest.Options) {
	s := servertest.Start(t, opts)
	ctx := context.Background()
	c := bundlev1.NewBundleClient(s.Admin(t))
	der := selfSignedDER(t)
	fed := &types.Bundle{TrustDomain: "other.org", X509Authorities: []*types.X509Certificate{{Asn1: der}}}

	created, err := c.BatchCreateFederatedBundle(ctx, &bundlev1.BatchCreateFederatedBundleRequest{Bundle: []*types.Bundle{
		fed,
		{TrustDomain: "example.org", X509Authorities: fed.X509Authorities},                          // own trust domain
		{TrustDomain: "bad.org", X509Authorities: []*types.X509Certificate{{Asn1: []byte("junk")}}}, // malformed
		{TrustDomain: "Not A Trust Domain"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []codes.Code{codes.OK, codes.InvalidArgument, codes.InvalidArgument, codes.InvalidArgument}
	for i, r := range created.Results {
		if codes.Code(r.Status.Code) != want[i] {
			t.Fatalf("result %d: %v, want %v", i, r.Status, want[i])
		}
	}
	again, err := c.BatchCreateFederatedBundle(ctx, &bundlev1.BatchCreateFederatedBundleRequest{Bundle: []*types.Bundle{fed}})
	if err != nil || codes.Code(again.Results[0].Status.Code) != codes.AlreadyExists {
		t.Fatalf("second create: %v %v", again, err)
	}
	got, err := c.GetFederatedBundle(ctx, &bundlev1.GetFederatedBundleRequest{TrustDomain: "other.org"})
	if err != nil || len(got.X509Authorities) != 1 {
		t.Fatalf("get: %v %v", got, err)
	}
	list, err := c.ListFederatedBundles(ctx, &bundlev1.ListFederatedBundlesRequest{})
	if err != nil || len(list.Bundles) != 1 || list.Bundles[0].TrustDomain != "other.org" {
		t.Fatalf("list (own bundle must not appear): %v %v", list, err)
	}
	n, err := c.CountBundles(ctx, &bundlev1.CountBundlesRequest{})
	if err != nil || n.Count != 2 {
		t.Fatalf("count: %v %v", n, err)
	}
	info, err := debugv1.NewDebugClient(s.Admin(t)).GetInfo(ctx, &debugv1.GetInfoRequest{})
	if err != nil || info.FederatedBundlesCount != 1 || len(info.SvidChain) == 0 || info.SvidChain[0].Id.Path != "/spire/server" {
		t.Fatalf("debug info: %v %v", info, err)
	}
	del, err := c.BatchDeleteFederatedBundle(ctx, &bundlev1.BatchDeleteFederatedBundleRequest{TrustDomains: []string{"other.org", "example.org"}})
	if err != nil || codes.Code(del.Results[0].Status.Code) != codes.OK || codes.Code(del.Results[1].Status.Code) != codes.InvalidArgument {
		t.Fatalf("delete (own bundle must be refused): %v %v", del, err)
	}
	_, err = c.GetFederatedBundle(ctx, &bundlev1.GetFederatedBundleRequest{TrustDomain: "other.org"})
	wantCode(t, err, codes.NotFound)
	// The own bundle is intact.
	own, err := c.GetBundle(ctx, &bundlev1.GetBundleRequest{})
	if err != nil || len(own.X509Authorities) == 0 || len(own.JwtAuthorities) == 0 {
		t.Fatalf("own bundle after federated delete: %v %v", own, err)
	}
}

func TestHealthAndSocketMode(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	ctx := context.Background()
	for _, c := range []healthpb.HealthClient{healthpb.NewHealthClient(s.Admin(t)), healthpb.NewHealthClient(s.Dial(t, nil))} {
		resp, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health: %v %v", resp, err)
		}
	}
	fi, err := os.Lstat(s.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != os.ModeSocket|0o770 {
		t.Fatalf("admin socket mode %v, want srwxrwx---", fi.Mode())
	}
	// The directory existed (servertest made it 0700): it is not the
	// server's to change.
	if fi, err = os.Stat(filepath.Dir(s.Socket)); err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("existing admin socket directory %v, want it left 0700", fi.Mode())
	}
}

func TestOversizedRequestRefused(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	big := &types.Entry{SpiffeId: pid("/w"), ParentId: pid("/p"), Selectors: []*types.Selector{{Type: "unix", Value: string(make([]byte, 5<<20))}}}
	_, err := entryv1.NewEntryClient(s.Admin(t)).BatchCreateEntry(context.Background(), &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{big}})
	wantCode(t, err, codes.ResourceExhausted)
	n, err := entryv1.NewEntryClient(s.Admin(t)).CountEntries(context.Background(), &entryv1.CountEntriesRequest{})
	if err != nil || n.Count != 0 {
		t.Fatalf("after an oversized request: %v entries, %v", n, err)
	}
}
