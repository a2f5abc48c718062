package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	trustdomainv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/trustdomain/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
)

// storeRefresher answers as server/federation's refresher does: a trust
// domain is managed when the store holds a relationship with it; fetching
// from unreachable.test fails. It counts reload notices.
type storeRefresher struct {
	ds      datastore.DataStore
	reloads atomic.Int32
}

func (r *storeRefresher) RefreshBundleFor(ctx context.Context, td spiffeid.TrustDomain) (bool, error) {
	_, err := r.ds.FetchFederationRelationship(ctx, td.Name())
	switch {
	case errors.Is(err, datastore.ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	case td.Name() == "unreachable.test":
		return true, errors.New("fetch bundle: connection refused")
	}
	return true, nil
}

func (r *storeRefresher) TriggerConfigReload() { r.reloads.Add(1) }

// TestRefreshBundle: SPIRE's answers of RefreshBundle (NotFound without a
// relationship, Internal with the refresher's error), and a reload notice
// after each batch that changed something, none after one that did not.
func TestRefreshBundle(t *testing.T) {
	ctx := context.Background()
	store := sqlitetest.Open(t)
	r := &storeRefresher{ds: store}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	svc := &TrustDomainService{api: New(Config{TrustDomain: td, DataStore: store, BundleRefresher: r, Log: slog.New(slog.DiscardHandler)})}

	_, err := svc.RefreshBundle(ctx, &trustdomainv1.RefreshBundleRequest{TrustDomain: "a.test"})
	if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != `no relationship with trust domain "a.test"` {
		t.Fatalf("without a relationship: %v", err)
	}
	_, err = svc.RefreshBundle(ctx, &trustdomainv1.RefreshBundleRequest{TrustDomain: "spiffe://"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad trust domain: %v", err)
	}
	// A refused create changes nothing: no notice.
	if _, err := svc.BatchCreateFederationRelationship(ctx, &trustdomainv1.BatchCreateFederationRelationshipRequest{
		FederationRelationships: []*types.FederationRelationship{{TrustDomain: "a.test", BundleEndpointUrl: "http://a.test"}}}); err != nil {
		t.Fatal(err)
	}
	if n := r.reloads.Load(); n != 0 {
		t.Fatalf("%d reloads after a refused create", n)
	}
	web := &types.FederationRelationship_HttpsWeb{HttpsWeb: &types.HTTPSWebProfile{}}
	resp, err := svc.BatchCreateFederationRelationship(ctx, &trustdomainv1.BatchCreateFederationRelationshipRequest{
		FederationRelationships: []*types.FederationRelationship{
			{TrustDomain: "a.test", BundleEndpointUrl: "https://a.test/b", BundleEndpointProfile: web},
			{TrustDomain: "unreachable.test", BundleEndpointUrl: "https://unreachable.test/b", BundleEndpointProfile: web},
		}})
	if err != nil || resp.Results[0].Status.Code != 0 || resp.Results[1].Status.Code != 0 {
		t.Fatalf("create: %v %v", resp, err)
	}
	if n := r.reloads.Load(); n != 1 {
		t.Fatalf("%d reloads after one batch", n)
	}
	if _, err := svc.RefreshBundle(ctx, &trustdomainv1.RefreshBundleRequest{TrustDomain: "a.test"}); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	_, err = svc.RefreshBundle(ctx, &trustdomainv1.RefreshBundleRequest{TrustDomain: "unreachable.test"})
	if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != "failed to refresh bundle: fetch bundle: connection refused" {
		t.Fatalf("refresh failing: %v", err)
	}
	if _, err := svc.BatchDeleteFederationRelationship(ctx, &trustdomainv1.BatchDeleteFederationRelationshipRequest{TrustDomains: []string{"a.test"}}); err != nil {
		t.Fatal(err)
	}
	if n := r.reloads.Load(); n != 2 {
		t.Fatalf("%d reloads after a delete", n)
	}
	_, err = svc.RefreshBundle(ctx, &trustdomainv1.RefreshBundleRequest{TrustDomain: "a.test"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("after delete: %v", err)
	}

	// A server built without a refresher answers, and does not panic.
	bare := &TrustDomainService{api: New(Config{TrustDomain: td, DataStore: store, Log: slog.New(slog.DiscardHandler)})}
	_, err = bare.RefreshBundle(ctx, &trustdomainv1.RefreshBundleRequest{TrustDomain: "a.test"})
	if status.Code(err) != codes.Internal {
		t.Fatalf("without a refresher: %v", err)
	}
}

// FuzzRelationshipFromProto: whatever a caller sends as a relationship,
// validation answers with a relationship or an error, never a panic, and
// what it accepts is in the normal form the datastore keeps.
func FuzzRelationshipFromProto(f *testing.F) {
	f.Add("a.test", "https://a.test/b", "spiffe://a.test/s", true, "a.test", []byte{0x30, 0x03, 0x02, 0x01, 0x01}, "k")
	f.Add("A.test", "http://u@/b", "", false, "", []byte(nil), "")
	f.Add("a.test", "https://a.test:99999/%zz", "spiffe://b.test", true, "b.test", []byte("junk"), "")
	f.Fuzz(func(t *testing.T, tdName, u, endpointID string, spiffe bool, bundleTD string, der []byte, kid string) {
		in := &types.FederationRelationship{TrustDomain: tdName, BundleEndpointUrl: u}
		if spiffe {
			in.BundleEndpointProfile = &types.FederationRelationship_HttpsSpiffe{HttpsSpiffe: &types.HTTPSSPIFFEProfile{EndpointSpiffeId: endpointID}}
		} else {
			in.BundleEndpointProfile = &types.FederationRelationship_HttpsWeb{}
		}
		if bundleTD != "" {
			in.TrustDomainBundle = &types.Bundle{TrustDomain: bundleTD, X509Authorities: []*types.X509Certificate{{Asn1: der}},
				JwtAuthorities: []*types.JWTKey{{KeyId: kid, PublicKey: der}}}
		}
		out, err := relationshipFromProto(in)
		if err != nil {
			return
		}
		if td, err := spiffeid.TrustDomainFromString(tdName); err != nil || out.TrustDomain != td.Name() {
			t.Fatalf("accepted trust domain %q from %q", out.TrustDomain, tdName)
		}
		if b := out.TrustDomainBundle; b != nil && b.TrustDomain != out.TrustDomain {
			t.Fatalf("accepted a bundle of %q for %q", b.TrustDomain, out.TrustDomain)
		}
		if _, err := relationshipToProto(out, nil); err != nil {
			t.Fatalf("accepted relationship does not convert back: %v", err)
		}
	})
}

// TestTrustDomainBatchLimit: a batch beyond MaxBatch is refused whole,
// before any item reaches the store.
func TestTrustDomainBatchLimit(t *testing.T) {
	ctx := context.Background()
	store := sqlitetest.Open(t)
	td := spiffeid.RequireTrustDomainFromString("example.org")
	svc := &TrustDomainService{api: New(Config{TrustDomain: td, DataStore: store, Log: slog.New(slog.DiscardHandler)})}
	frs := make([]*types.FederationRelationship, MaxBatch+1)
	for i := range frs {
		frs[i] = &types.FederationRelationship{TrustDomain: fmt.Sprintf("td%d.test", i), BundleEndpointUrl: "https://x.test",
			BundleEndpointProfile: &types.FederationRelationship_HttpsWeb{HttpsWeb: &types.HTTPSWebProfile{}}}
	}
	_, err := svc.BatchCreateFederationRelationship(ctx, &trustdomainv1.BatchCreateFederationRelationshipRequest{FederationRelationships: frs})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("create: %v", err)
	}
	_, err = svc.BatchUpdateFederationRelationship(ctx, &trustdomainv1.BatchUpdateFederationRelationshipRequest{FederationRelationships: frs})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("update: %v", err)
	}
	_, err = svc.BatchDeleteFederationRelationship(ctx, &trustdomainv1.BatchDeleteFederationRelationshipRequest{TrustDomains: make([]string, MaxBatch+1)})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("delete: %v", err)
	}
	if frs, _, err := store.ListFederationRelationships(ctx, nil); err != nil || len(frs) != 0 {
		t.Fatalf("stored %d relationships, %v", len(frs), err)
	}
}
