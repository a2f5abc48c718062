package sqlstore

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"

	"github.com/spiffe-hw/spire-hw/server/datastore"
)

func spiffeProfile(id string) *types.FederationRelationship_HttpsSpiffe {
	return &types.FederationRelationship_HttpsSpiffe{HttpsSpiffe: &types.HTTPSSPIFFEProfile{EndpointSpiffeId: id}}
}

func webProfile() *types.FederationRelationship_HttpsWeb {
	return &types.FederationRelationship_HttpsWeb{HttpsWeb: &types.HTTPSWebProfile{}}
}

func mustFetchFR(t *testing.T, ds datastore.DataStore, td string) *types.FederationRelationship {
	t.Helper()
	fr, err := ds.FetchFederationRelationship(ctx, td)
	if err != nil {
		t.Fatalf("FetchFederationRelationship(%q): %v", td, err)
	}
	return fr
}

func testFederationCRUD(t *testing.T, ds datastore.DataStore) {
	bundle := &types.Bundle{
		TrustDomain:     "a.org",
		X509Authorities: []*types.X509Certificate{{Asn1: testCert(t, time.Now().Add(time.Hour))}},
		RefreshHint:     30,
		SequenceNumber:  4,
	}
	in := &types.FederationRelationship{
		TrustDomain:           "spiffe://a.org",
		BundleEndpointUrl:     "https://a.org:8443/bundle",
		BundleEndpointProfile: spiffeProfile("spiffe://a.org/spire/server"),
		TrustDomainBundle:     bundle,
	}
	want := &types.FederationRelationship{
		TrustDomain:           "a.org",
		BundleEndpointUrl:     "https://a.org:8443/bundle",
		BundleEndpointProfile: spiffeProfile("spiffe://a.org/spire/server"),
		TrustDomainBundle:     bundle,
	}
	got, err := ds.CreateFederationRelationship(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, got, want)
	wantEqual(t, mustFetchFR(t, ds, "a.org"), want)
	wantEqual(t, mustFetchFR(t, ds, "spiffe://a.org"), want)
	// The bundle went to the bundles table, where agents read it.
	b, err := ds.FetchBundle(ctx, "a.org")
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, b, bundle)

	// A duplicate fails and, in its transaction, replaces no bundle.
	dup := proto.Clone(in).(*types.FederationRelationship)
	dup.TrustDomain = "a.org"
	dup.TrustDomainBundle = &types.Bundle{TrustDomain: "a.org", SequenceNumber: 99}
	_, err = ds.CreateFederationRelationship(ctx, dup)
	wantErr(t, err, datastore.ErrAlreadyExists)
	b, _ = ds.FetchBundle(ctx, "a.org")
	wantEqual(t, b, bundle)

	// Without a bundle: none until one is set; a bundle without a trust
	// domain is stored under the relationship's.
	web := &types.FederationRelationship{TrustDomain: "b.org", BundleEndpointUrl: "https://b.org/", BundleEndpointProfile: webProfile()}
	got, err = ds.CreateFederationRelationship(ctx, web)
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, got, web)
	if _, err := ds.SetBundle(ctx, &types.Bundle{TrustDomain: "b.org", SequenceNumber: 1}); err != nil {
		t.Fatal(err)
	}
	if fr := mustFetchFR(t, ds, "b.org"); fr.TrustDomainBundle.GetSequenceNumber() != 1 {
		t.Fatalf("bundle of b.org = %v", fr.TrustDomainBundle)
	}
	c := &types.FederationRelationship{TrustDomain: "c.org", BundleEndpointUrl: "https://c.org/", BundleEndpointProfile: webProfile(),
		TrustDomainBundle: &types.Bundle{SequenceNumber: 2}}
	if _, err := ds.CreateFederationRelationship(ctx, c); err != nil {
		t.Fatal(err)
	}
	if b, err := ds.FetchBundle(ctx, "c.org"); err != nil || b.SequenceNumber != 2 || b.TrustDomain != "c.org" {
		t.Fatalf("bundle of c.org = %v, %v", b, err)
	}

	_, err = ds.FetchFederationRelationship(ctx, "missing.org")
	wantErr(t, err, datastore.ErrNotFound)

	// Delete keeps the bundle, as SPIRE does.
	if err := ds.DeleteFederationRelationship(ctx, "spiffe://a.org"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, ds.DeleteFederationRelationship(ctx, "a.org"), datastore.ErrNotFound)
	_, err = ds.FetchFederationRelationship(ctx, "a.org")
	wantErr(t, err, datastore.ErrNotFound)
	if _, err := ds.FetchBundle(ctx, "a.org"); err != nil {
		t.Fatalf("bundle deleted with its relationship: %v", err)
	}
}

func testFederationUpdate(t *testing.T, ds datastore.DataStore) {
	base := &types.FederationRelationship{
		TrustDomain:           "a.org",
		BundleEndpointUrl:     "https://a.org/1",
		BundleEndpointProfile: spiffeProfile("spiffe://a.org/server"),
		TrustDomainBundle:     &types.Bundle{TrustDomain: "a.org", SequenceNumber: 1},
	}
	if _, err := ds.CreateFederationRelationship(ctx, base); err != nil {
		t.Fatal(err)
	}

	// Only the URL: the profile in the request is ignored.
	got, err := ds.UpdateFederationRelationship(ctx, &types.FederationRelationship{
		TrustDomain: "a.org", BundleEndpointUrl: "https://a.org/2", BundleEndpointProfile: webProfile(),
	}, &types.FederationRelationshipMask{BundleEndpointUrl: true})
	if err != nil {
		t.Fatal(err)
	}
	want := proto.Clone(base).(*types.FederationRelationship)
	want.BundleEndpointUrl = "https://a.org/2"
	wantEqual(t, got, want)
	wantEqual(t, mustFetchFR(t, ds, "a.org"), want)

	// The profile, to https_web: the endpoint SPIFFE ID goes with it.
	got, err = ds.UpdateFederationRelationship(ctx, &types.FederationRelationship{TrustDomain: "a.org", BundleEndpointProfile: webProfile()},
		&types.FederationRelationshipMask{BundleEndpointProfile: true})
	if err != nil {
		t.Fatal(err)
	}
	want.BundleEndpointProfile = webProfile()
	wantEqual(t, got, want)

	// The bundle mask without a bundle changes nothing; with one it
	// replaces the stored bundle.
	if got, err = ds.UpdateFederationRelationship(ctx, &types.FederationRelationship{TrustDomain: "a.org"},
		&types.FederationRelationshipMask{TrustDomainBundle: true}); err != nil {
		t.Fatal(err)
	}
	wantEqual(t, got, want)
	nb := &types.Bundle{TrustDomain: "a.org", SequenceNumber: 7, RefreshHint: 9}
	if got, err = ds.UpdateFederationRelationship(ctx, &types.FederationRelationship{TrustDomain: "a.org", TrustDomainBundle: nb},
		&types.FederationRelationshipMask{TrustDomainBundle: true}); err != nil {
		t.Fatal(err)
	}
	want.TrustDomainBundle = nb
	wantEqual(t, got, want)
	if b, _ := ds.FetchBundle(ctx, "a.org"); !proto.Equal(b, nb) {
		t.Fatalf("bundle after update = %v", b)
	}

	// A nil mask is every field.
	all := &types.FederationRelationship{TrustDomain: "a.org", BundleEndpointUrl: "https://a.org/3",
		BundleEndpointProfile: spiffeProfile("spiffe://a.org/other")}
	if got, err = ds.UpdateFederationRelationship(ctx, all, nil); err != nil {
		t.Fatal(err)
	}
	want = proto.Clone(all).(*types.FederationRelationship)
	want.TrustDomainBundle = nb
	wantEqual(t, got, want)

	_, err = ds.UpdateFederationRelationship(ctx, &types.FederationRelationship{TrustDomain: "missing.org", BundleEndpointUrl: "https://x/"},
		&types.FederationRelationshipMask{BundleEndpointUrl: true})
	wantErr(t, err, datastore.ErrNotFound)
	// A failed update of a missing relationship stores no bundle either.
	_, err = ds.UpdateFederationRelationship(ctx, &types.FederationRelationship{TrustDomain: "missing.org",
		TrustDomainBundle: &types.Bundle{TrustDomain: "missing.org"}}, &types.FederationRelationshipMask{TrustDomainBundle: true})
	wantErr(t, err, datastore.ErrNotFound)
	_, err = ds.FetchBundle(ctx, "missing.org")
	wantErr(t, err, datastore.ErrNotFound)
}

func testFederationInvalid(t *testing.T, ds datastore.DataStore) {
	valid := func() *types.FederationRelationship {
		return &types.FederationRelationship{TrustDomain: "a.org", BundleEndpointUrl: "https://a.org/", BundleEndpointProfile: webProfile()}
	}
	for _, tc := range []struct {
		name   string
		modify func(fr *types.FederationRelationship) *types.FederationRelationship
	}{
		{"nil", func(*types.FederationRelationship) *types.FederationRelationship { return nil }},
		{"no trust domain", func(fr *types.FederationRelationship) *types.FederationRelationship { fr.TrustDomain = ""; return fr }},
		{"bad trust domain", func(fr *types.FederationRelationship) *types.FederationRelationship {
			fr.TrustDomain = "A B"
			return fr
		}},
		{"no URL", func(fr *types.FederationRelationship) *types.FederationRelationship {
			fr.BundleEndpointUrl = ""
			return fr
		}},
		{"no profile", func(fr *types.FederationRelationship) *types.FederationRelationship {
			fr.BundleEndpointProfile = nil
			return fr
		}},
		{"spiffe without ID", func(fr *types.FederationRelationship) *types.FederationRelationship {
			fr.BundleEndpointProfile = spiffeProfile("")
			return fr
		}},
		{"spiffe with bad ID", func(fr *types.FederationRelationship) *types.FederationRelationship {
			fr.BundleEndpointProfile = spiffeProfile("https://a.org/x")
			return fr
		}},
		{"bundle of another trust domain", func(fr *types.FederationRelationship) *types.FederationRelationship {
			fr.TrustDomainBundle = &types.Bundle{TrustDomain: "b.org"}
			return fr
		}},
	} {
		if _, err := ds.CreateFederationRelationship(ctx, tc.modify(valid())); err == nil {
			t.Errorf("%s: created", tc.name)
		}
	}
	if rels, _, err := ds.ListFederationRelationships(ctx, nil); err != nil || len(rels) != 0 {
		t.Fatalf("after refused creates: %d relationships, %v", len(rels), err)
	}
	if _, err := ds.FetchBundle(ctx, "b.org"); err == nil {
		t.Fatal("a refused create stored a bundle")
	}
	if _, err := ds.CreateFederationRelationship(ctx, valid()); err != nil {
		t.Fatal(err)
	}
	// An update checks only the fields its mask selects.
	if _, err := ds.UpdateFederationRelationship(ctx, &types.FederationRelationship{TrustDomain: "a.org"},
		&types.FederationRelationshipMask{BundleEndpointUrl: true}); err == nil {
		t.Fatal("update to an empty URL accepted")
	}
	if _, err := ds.UpdateFederationRelationship(ctx, &types.FederationRelationship{TrustDomain: "a.org", BundleEndpointProfile: spiffeProfile("")},
		&types.FederationRelationshipMask{BundleEndpointProfile: true}); err == nil {
		t.Fatal("update to https_spiffe without an ID accepted")
	}
	if _, err := ds.UpdateFederationRelationship(ctx, &types.FederationRelationship{TrustDomain: "a.org", BundleEndpointUrl: "https://a.org/new"},
		&types.FederationRelationshipMask{BundleEndpointUrl: true}); err != nil {
		t.Fatalf("URL-only update: %v", err)
	}
}

func testFederationPaging(t *testing.T, ds datastore.DataStore) {
	for _, td := range []string{"c.org", "a.org", "b.org", "d.org", "e.org"} {
		if _, err := ds.CreateFederationRelationship(ctx, &types.FederationRelationship{TrustDomain: td,
			BundleEndpointUrl: "https://" + td + "/", BundleEndpointProfile: webProfile(),
			TrustDomainBundle: &types.Bundle{TrustDomain: td}}); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	p := &datastore.Pagination{Size: 2}
	pages := 0
	for {
		rels, next, err := ds.ListFederationRelationships(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, fr := range rels {
			if fr.TrustDomainBundle.GetTrustDomain() != fr.TrustDomain {
				t.Fatalf("%s listed with bundle %v", fr.TrustDomain, fr.TrustDomainBundle)
			}
			names = append(names, fr.TrustDomain)
		}
		if next == "" {
			break
		}
		p.Token = next
	}
	if want := []string{"a.org", "b.org", "c.org", "d.org", "e.org"}; !slices.Equal(names, want) || pages != 3 {
		t.Fatalf("listed %v in %d pages, want %v in 3", names, pages, want)
	}
	all, next, err := ds.ListFederationRelationships(ctx, nil)
	if err != nil || len(all) != 5 || next != "" {
		t.Fatalf("List(nil) = %d, %q, %v", len(all), next, err)
	}
	if _, _, err := ds.ListFederationRelationships(ctx, &datastore.Pagination{Size: 1, Token: "not a token"}); err == nil {
		t.Fatal("invalid page token accepted")
	}
}

func testFederationConcurrentCreate(t *testing.T, ds datastore.DataStore) {
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = ds.CreateFederationRelationship(ctx, &types.FederationRelationship{TrustDomain: "a.org",
				BundleEndpointUrl: "https://a.org/", BundleEndpointProfile: webProfile()})
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		} else {
			wantErr(t, err, datastore.ErrAlreadyExists)
		}
	}
	if ok != 1 {
		t.Fatalf("%d concurrent creates succeeded, want 1", ok)
	}
}

// TestMigrationAddsFederation upgrades a version-1 database (before
// federation) in place: its data stays and relationships can be stored.
func TestMigrationAddsFederation(t *testing.T) {
	cfg := sqliteConfig(t)
	saved := migrations
	t.Cleanup(func() { migrations, schemaVersion = saved, len(saved) })
	migrations, schemaVersion = saved[:1], 1
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetBundle(ctx, &types.Bundle{TrustDomain: "a.org", SequenceNumber: 3}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	migrations, schemaVersion = saved, len(saved)
	s = openStore(t, cfg)
	fr, err := s.CreateFederationRelationship(ctx, &types.FederationRelationship{TrustDomain: "a.org",
		BundleEndpointUrl: "https://a.org/", BundleEndpointProfile: webProfile()})
	if err != nil {
		t.Fatal(err)
	}
	if fr.TrustDomainBundle.GetSequenceNumber() != 3 {
		t.Fatalf("bundle from before the migration: %v", fr.TrustDomainBundle)
	}
}

// TestMigrationKeepsCAJournal upgrades a version-2 database, whose single
// journal had no authority ID: the row stays, unclaimed, for its server to
// find by name.
func TestMigrationKeepsCAJournal(t *testing.T) {
	cfg := sqliteConfig(t)
	saved := migrations
	t.Cleanup(func() { migrations, schemaVersion = saved, len(saved) })
	migrations, schemaVersion = saved[:2], 2
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.Exec(`INSERT INTO ca_journal (name, data) VALUES ('ca', x'7b7d')`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	migrations, schemaVersion = saved, len(saved)
	s = openStore(t, cfg)
	j, err := s.FetchCAJournal(ctx, "ca")
	if err != nil || string(j.Data) != "{}" || j.ActiveX509AuthorityID != "" || j.ExpiresAt != 0 {
		t.Fatalf("journal after the migration: %+v, %v", j, err)
	}
	if n, err := s.PruneCAJournals(ctx, time.Now()); err != nil || n != 0 {
		t.Fatalf("PruneCAJournals = %d, %v; the unclaimed journal must stay", n, err)
	}
}
