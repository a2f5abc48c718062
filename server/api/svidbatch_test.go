package api_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"runtime"
	"testing"

	"github.com/spiffe-hw/spire-hw/server/servertest"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
)

// TestBatchNewX509SVIDInOrder: a batch large enough to be signed on
// several goroutines answers each param at its own index, an SVID for its
// own entry and CSR key, and each refusal where its param was.
func TestBatchNewX509SVIDInOrder(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	s := servertest.Start(t, servertest.Options{})
	ctx := context.Background()
	admin := s.Admin(t)
	a, b := s.NewAgent(t), s.NewAgent(t)
	mine := []*types.Entry{
		createEntry(t, admin, &types.Entry{SpiffeId: pid("/batch/one"), ParentId: idOf(a.ID), Selectors: []*types.Selector{{Type: "unix", Value: "uid:1"}}}),
		createEntry(t, admin, &types.Entry{SpiffeId: pid("/batch/two"), ParentId: idOf(a.ID), Selectors: []*types.Selector{{Type: "unix", Value: "uid:2"}}}),
	}
	other := createEntry(t, admin, &types.Entry{SpiffeId: pid("/batch/other"), ParentId: idOf(b.ID), Selectors: []*types.Selector{{Type: "unix", Value: "uid:3"}}})

	const n = 96
	params := make([]*svidv1.NewX509SVIDParams, n)
	keys := make([]crypto.Signer, n)
	want := make([]codes.Code, n)
	for i := range n {
		key, csr := servertest.NewCSR(t)
		switch i % 4 {
		case 0, 1:
			params[i], keys[i], want[i] = &svidv1.NewX509SVIDParams{EntryId: mine[i%2].Id, Csr: csr}, key, codes.OK
		case 2:
			params[i], want[i] = &svidv1.NewX509SVIDParams{EntryId: other.Id, Csr: csr}, codes.PermissionDenied
		default:
			params[i], want[i] = &svidv1.NewX509SVIDParams{EntryId: mine[0].Id, Csr: csr[:len(csr)-1]}, codes.InvalidArgument
		}
	}
	resp, err := svidv1.NewSVIDClient(a.Conn).BatchNewX509SVID(ctx, &svidv1.BatchNewX509SVIDRequest{Params: params})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Results) != n {
		t.Fatalf("%d results for %d params", len(resp.Results), n)
	}
	for i, r := range resp.Results {
		if got := codes.Code(r.Status.GetCode()); got != want[i] {
			t.Fatalf("result %d: %v, want %v", i, r.Status, want[i])
		}
		if want[i] != codes.OK {
			if r.Svid != nil {
				t.Fatalf("result %d: refused, yet an SVID was returned", i)
			}
			continue
		}
		leaf, err := x509.ParseCertificate(r.Svid.CertChain[0])
		if err != nil {
			t.Fatal(err)
		}
		wantKey, err := x509.MarshalPKIXPublicKey(keys[i].Public())
		if err != nil {
			t.Fatal(err)
		}
		gotKey, _ := x509.MarshalPKIXPublicKey(leaf.PublicKey)
		if !bytes.Equal(gotKey, wantKey) {
			t.Fatalf("result %d certifies another param's key", i)
		}
		if got, wantID := leaf.URIs[0].String(), "spiffe://example.org"+[]string{"/batch/one", "/batch/two"}[i%2]; got != wantID {
			t.Fatalf("result %d: SVID for %s, want %s", i, got, wantID)
		}
	}
}
