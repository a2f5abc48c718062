package api_test

import (
	"context"
	"testing"

	"github.com/spiffe-hw/spire-hw/server/servertest"
	"github.com/spiffe-hw/spire-hw/wire/push"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	trustdomainv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/trustdomain/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// syncFederated is syncAgent with what our agent's sync fetches next: the
// bundle of every trust domain its entries federate with (a domain
// without one is left out, as the agent does).
func syncFederated(t *testing.T, a *servertest.Agent) []*types.Entry {
	t.Helper()
	entries := syncAgent(t, a)
	seen := map[string]bool{}
	for _, e := range entries {
		for _, td := range e.FederatesWith {
			if seen[td] {
				continue
			}
			seen[td] = true
			_, err := bundlev1.NewBundleClient(a.Conn).GetFederatedBundle(context.Background(), &bundlev1.GetFederatedBundleRequest{TrustDomain: td})
			if err != nil && status.Code(err) != codes.NotFound {
				t.Fatal(err)
			}
		}
	}
	return entries
}

// setFederated stores a new bundle (a fresh authority) for td.
func setFederated(t *testing.T, admin *grpc.ClientConn, td string, der []byte) {
	t.Helper()
	resp, err := bundlev1.NewBundleClient(admin).BatchSetFederatedBundle(context.Background(), &bundlev1.BatchSetFederatedBundleRequest{
		Bundle: []*types.Bundle{{TrustDomain: td, X509Authorities: []*types.X509Certificate{{Asn1: der}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if c := resp.Results[0].Status.Code; c != int32(codes.OK) {
		t.Fatalf("set bundle of %s: %v", td, resp.Results[0].Status)
	}
}

// withoutOwnBundle forwards notices with the Bundle bit cleared, and drops
// those about the own bundle only: a fresh server's CA may still publish
// an authority (its JWT key, say) after the agents' first sync, which is
// a change they are rightly told of, but not what this test is about.
func withoutOwnBundle(in <-chan push.Change) <-chan push.Change {
	out := make(chan push.Change, cap(in))
	go func() {
		for c := range in {
			if c &^= push.Bundle; c != 0 {
				out <- c
			}
		}
	}()
	return out
}

// TestNoticesFederatedBundles: a changed foreign bundle is pushed to the
// agents whose entries federate with its trust domain, and to no other.
func TestNoticesFederatedBundles(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fed, plain := s.NewAgent(t), s.NewAgent(t)
	admin := s.Admin(t)
	setFederated(t, admin, "td2.org", selfSignedDER(t))
	setFederated(t, admin, "td3.org", selfSignedDER(t))
	createEntry(t, admin, &types.Entry{ParentId: idOf(fed.ID), SpiffeId: pid("/fed"), Selectors: []*types.Selector{{Type: "unix", Value: "uid:1"}}, FederatesWith: []string{"td2.org"}})
	createEntry(t, admin, &types.Entry{ParentId: idOf(plain.ID), SpiffeId: pid("/plain"), Selectors: []*types.Selector{{Type: "unix", Value: "uid:1"}}})

	subscribe := func(a *servertest.Agent) (<-chan push.Change, <-chan error) {
		st, err := push.Subscribe(ctx, a.Conn)
		if err != nil {
			t.Fatal(err)
		}
		raw, errc := notices(t, st)
		if c := nextNotice(t, raw, errc); c != push.Open {
			t.Fatalf("first notice %v, want open", c)
		}
		syncFederated(t, a)
		return withoutOwnBundle(raw), errc
	}
	ch, errc := subscribe(fed)
	pch, perrc := subscribe(plain)
	// The feed's first look after a start is a wave: nothing to tell.
	noNotice(t, ch)
	noNotice(t, pch)

	setFederated(t, admin, "td2.org", selfSignedDER(t))
	if c := nextNotice(t, ch, errc); c != push.FederatedBundles {
		t.Fatalf("notice %v, want federated_bundles", c)
	}
	noNotice(t, pch)
	// Coalesced: one notice per state; a new state before the agent
	// syncs is a new notice, and after its sync there is nothing more.
	der := selfSignedDER(t)
	setFederated(t, admin, "td2.org", der)
	if c := nextNotice(t, ch, errc); c != push.FederatedBundles {
		t.Fatalf("notice %v, want federated_bundles", c)
	}
	syncFederated(t, fed)
	noNotice(t, ch)
	// The same bundle set again is no change.
	setFederated(t, admin, "td2.org", der)
	noNotice(t, ch)

	// A domain no entry of fed's federates with wakes nobody.
	setFederated(t, admin, "td3.org", selfSignedDER(t))
	noNotice(t, ch)
	noNotice(t, pch)

	// An entry that starts federating with td3: its entries changed, and
	// td3's bundle is one fed does not hold.
	resp, err := entryv1.NewEntryClient(admin).ListEntries(ctx, &entryv1.ListEntriesRequest{Filter: &entryv1.ListEntriesRequest_Filter{BySpiffeId: pid("/plain")}})
	if err != nil || len(resp.Entries) != 1 {
		t.Fatalf("list: %v %v", resp, err)
	}
	e := resp.Entries[0]
	e.FederatesWith = []string{"td3.org"}
	if _, err := entryv1.NewEntryClient(admin).BatchUpdateEntry(ctx, &entryv1.BatchUpdateEntryRequest{Entries: []*types.Entry{e}}); err != nil {
		t.Fatal(err)
	}
	if c := nextNotice(t, pch, perrc); c != push.Entries|push.FederatedBundles {
		t.Fatalf("notice %v, want entries|federated_bundles", c)
	}
	syncFederated(t, plain)
	noNotice(t, pch)
	noNotice(t, ch)

	// A relationship created through trustdomain/v1 with a bundle for
	// td2 replaces td2's bundle; nobody kicks the feed, its look finds it.
	rel := webRelationship("td2.org", "https://td2.invalid/bundle")
	rel.TrustDomainBundle = foreignBundle(t, "td2.org")
	created, err := trustdomainv1.NewTrustDomainClient(admin).BatchCreateFederationRelationship(ctx, &trustdomainv1.BatchCreateFederationRelationshipRequest{
		FederationRelationships: []*types.FederationRelationship{rel}})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "create relationship", created.Results[0].Status, codes.OK, "OK")
	if c := nextNotice(t, ch, errc); c != push.FederatedBundles {
		t.Fatalf("notice %v, want federated_bundles", c)
	}
	syncFederated(t, fed)
	noNotice(t, ch)

	// A deleted bundle is a change; once the agent has found it gone,
	// nothing more.
	if _, err := bundlev1.NewBundleClient(admin).BatchDeleteFederatedBundle(ctx, &bundlev1.BatchDeleteFederatedBundleRequest{TrustDomains: []string{"td2.org"}}); err != nil {
		t.Fatal(err)
	}
	if c := nextNotice(t, ch, errc); c != push.FederatedBundles {
		t.Fatalf("notice %v, want federated_bundles", c)
	}
	syncFederated(t, fed)
	noNotice(t, ch)
	noNotice(t, pch)
}
