package sqlstore

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"

	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// testDataStore is the conformance suite every datastore.DataStore
// implementation must pass. open returns a fresh, empty store that the
// caller closes when the test ends.
func testDataStore(t *testing.T, open func(t *testing.T) datastore.DataStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, ds datastore.DataStore)
	}{
		{"EntryCRUD", testEntryCRUD},
		{"EntryDuplicates", testEntryDuplicates},
		{"EntryBatch", testEntryBatch},
		{"EntryConcurrentDuplicates", testEntryConcurrentDuplicates},
		{"EntryUpdate", testEntryUpdate},
		{"EntriesRevision", testEntriesRevision},
		{"EntryFilters", testEntryFilters},
		{"EntryPaging", testEntryPaging},
		{"EntryPrune", testEntryPrune},
		{"NodeCRUD", testNodeCRUD},
		{"NodeFilters", testNodeFilters},
		{"JoinTokens", testJoinTokens},
		{"JoinTokenRace", testJoinTokenRace},
		{"Bundles", testBundles},
		{"BundleAppendPrune", testBundleAppendPrune},
		{"BundleConcurrentAppend", testBundleConcurrentAppend},
		{"BundleModify", testBundleModify},
		{"BundleCount", testBundleCount},
		{"CAJournal", testCAJournal},
		{"FederationCRUD", testFederationCRUD},
		{"FederationUpdate", testFederationUpdate},
		{"FederationInvalid", testFederationInvalid},
		{"FederationPaging", testFederationPaging},
		{"FederationConcurrentCreate", testFederationConcurrentCreate},
		{"KeysExact", testKeysExact},
		{"NodeUpdateUnchanged", testNodeUpdateUnchanged},
		{"NodeUpdateConflict", testNodeUpdateConflict},
		{"NodeUpdateRace", testNodeUpdateRace},
		{"EntryEvents", testEntryEvents},
		{"EntryFetchMany", testEntryFetchMany},
		{"NodeEvents", testNodeEvents},
		{"NodeDeleteIf", testNodeDeleteIf},
		{"EventPrune", testEventPrune},
		{"EntryPruneConcurrent", testEntryPruneConcurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // each subtest has a store of its own
			tt.fn(t, open(t))
		})
	}
}

var ctx = context.Background()

func sid(td, path string) *types.SPIFFEID { return &types.SPIFFEID{TrustDomain: td, Path: path} }

func sel(tv ...string) []*types.Selector {
	var out []*types.Selector
	for i := 0; i < len(tv); i += 2 {
		out = append(out, &types.Selector{Type: tv[i], Value: tv[i+1]})
	}
	return out
}

func mustCreate(t *testing.T, ds datastore.DataStore, e *types.Entry) *types.Entry {
	t.Helper()
	out, err := ds.CreateEntry(ctx, e)
	if err != nil {
		t.Fatalf("CreateEntry: %v", err)
	}
	return out
}

func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want %v", err, target)
	}
}

func wantEqual(t *testing.T, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func testEntryCRUD(t *testing.T, ds datastore.DataStore) {
	before := time.Now().Unix()
	in := &types.Entry{
		SpiffeId:       sid("example.org", "/workload"),
		ParentId:       sid("example.org", "/agent"),
		Selectors:      sel("unix", "uid:1000", "k8s", "ns:default", "unix", "gid:0", "unix", "uid:1000"),
		X509SvidTtl:    3600,
		JwtSvidTtl:     300,
		FederatesWith:  []string{"b.org", "spiffe://a.org"},
		Admin:          true,
		Downstream:     true,
		ExpiresAt:      1234,
		DnsNames:       []string{"z.example", "a.example"},
		StoreSvid:      true,
		Hint:           "external",
		CreatedAt:      1, // ignored
		RevisionNumber: 9, // ignored
	}
	got := mustCreate(t, ds, in)
	if !uuidRE.MatchString(got.Id) {
		t.Fatalf("generated ID %q is not a UUIDv4", got.Id)
	}
	if got.CreatedAt < before || got.CreatedAt > time.Now().Unix() {
		t.Fatalf("CreatedAt = %d, want about now", got.CreatedAt)
	}
	want := &types.Entry{
		Id:            got.Id,
		SpiffeId:      sid("example.org", "/workload"),
		ParentId:      sid("example.org", "/agent"),
		Selectors:     sel("k8s", "ns:default", "unix", "gid:0", "unix", "uid:1000"),
		X509SvidTtl:   3600,
		JwtSvidTtl:    300,
		FederatesWith: []string{"b.org", "a.org"},
		Admin:         true,
		Downstream:    true,
		ExpiresAt:     1234,
		DnsNames:      []string{"z.example", "a.example"},
		StoreSvid:     true,
		Hint:          "external",
		CreatedAt:     got.CreatedAt,
	}
	wantEqual(t, got, want)
	fetched, err := ds.FetchEntry(ctx, got.Id)
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, fetched, want)

	// A caller-chosen ID is kept; reusing it is a duplicate even with a
	// different triple.
	mine := mustCreate(t, ds, &types.Entry{Id: "my-id", SpiffeId: sid("example.org", "/x"), ParentId: sid("example.org", "/agent"), Selectors: sel("a", "1")})
	if mine.Id != "my-id" {
		t.Fatalf("Id = %q, want my-id", mine.Id)
	}
	_, err = ds.CreateEntry(ctx, &types.Entry{Id: "my-id", SpiffeId: sid("example.org", "/y"), ParentId: sid("example.org", "/agent"), Selectors: sel("a", "2")})
	wantErr(t, err, datastore.ErrAlreadyExists)

	_, err = ds.CreateEntry(ctx, &types.Entry{ParentId: sid("example.org", "/agent")})
	if err == nil {
		t.Fatal("CreateEntry without SPIFFE ID succeeded")
	}

	_, err = ds.FetchEntry(ctx, "missing")
	wantErr(t, err, datastore.ErrNotFound)

	deleted, err := ds.DeleteEntry(ctx, got.Id)
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, deleted, want)
	_, err = ds.FetchEntry(ctx, got.Id)
	wantErr(t, err, datastore.ErrNotFound)
	_, err = ds.DeleteEntry(ctx, got.Id)
	wantErr(t, err, datastore.ErrNotFound)
	// Children went with the entry: a new entry with the old ID starts empty.
	again := mustCreate(t, ds, &types.Entry{Id: got.Id, SpiffeId: sid("example.org", "/workload"), ParentId: sid("example.org", "/agent")})
	if len(again.Selectors)+len(again.DnsNames)+len(again.FederatesWith) != 0 {
		t.Fatalf("recreated entry inherited children: %v", again)
	}
}

func testEntryDuplicates(t *testing.T, ds datastore.DataStore) {
	base := &types.Entry{SpiffeId: sid("td", "/w"), ParentId: sid("td", "/p"), Selectors: sel("a", "1", "b", "2")}
	mustCreate(t, ds, base)
	for _, tc := range []struct {
		name string
		e    *types.Entry
		dup  bool
	}{
		{"same", base, true},
		{"selectors reordered and repeated", &types.Entry{SpiffeId: sid("td", "/w"), ParentId: sid("td", "/p"), Selectors: sel("b", "2", "a", "1", "b", "2")}, true},
		{"other fields differ", &types.Entry{SpiffeId: sid("td", "/w"), ParentId: sid("td", "/p"), Selectors: sel("a", "1", "b", "2"), X509SvidTtl: 5, Hint: "x"}, true},
		{"selector subset", &types.Entry{SpiffeId: sid("td", "/w"), ParentId: sid("td", "/p"), Selectors: sel("a", "1")}, false},
		{"other parent", &types.Entry{SpiffeId: sid("td", "/w"), ParentId: sid("td", "/q"), Selectors: sel("a", "1", "b", "2")}, false},
		{"other spiffe id", &types.Entry{SpiffeId: sid("td", "/w2"), ParentId: sid("td", "/p"), Selectors: sel("a", "1", "b", "2")}, false},
		// Length-prefixed hashing: moving a boundary is a different set.
		{"boundary shift", &types.Entry{SpiffeId: sid("td", "/w"), ParentId: sid("td", "/p"), Selectors: sel("a", "1b", "", "2")}, false},
	} {
		_, err := ds.CreateEntry(ctx, tc.e)
		if tc.dup {
			if !errors.Is(err, datastore.ErrAlreadyExists) {
				t.Errorf("%s: error = %v, want ErrAlreadyExists", tc.name, err)
			}
		} else if err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func testEntryConcurrentDuplicates(t *testing.T, ds datastore.DataStore) {
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = ds.CreateEntry(ctx, &types.Entry{SpiffeId: sid("td", "/w"), ParentId: sid("td", "/p"), Selectors: sel("a", "1")})
		}()
	}
	close(start)
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, datastore.ErrAlreadyExists):
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d creations succeeded, want 1", ok)
	}
	if n, err := ds.CountEntries(ctx, nil); err != nil || n != 1 {
		t.Fatalf("CountEntries = %d, %v; want 1", n, err)
	}
}

func testEntryUpdate(t *testing.T, ds datastore.DataStore) {
	orig := mustCreate(t, ds, &types.Entry{
		SpiffeId: sid("td", "/w"), ParentId: sid("td", "/p"), Selectors: sel("a", "1"),
		X509SvidTtl: 10, DnsNames: []string{"one"}, FederatesWith: []string{"fed.org"}, Hint: "h",
	})
	other := mustCreate(t, ds, &types.Entry{SpiffeId: sid("td", "/w"), ParentId: sid("td", "/p"), Selectors: sel("b", "2")})

	// Only masked fields change; unmasked ones keep their stored values
	// even though the request carries zero values for them.
	got, err := ds.UpdateEntry(ctx, &types.Entry{Id: orig.Id, X509SvidTtl: 99, Admin: true, DnsNames: []string{"x", "a"}},
		&types.EntryMask{X509SvidTtl: true, Admin: true, DnsNames: true, RevisionNumber: true, CreatedAt: true})
	if err != nil {
		t.Fatal(err)
	}
	want := proto.Clone(orig).(*types.Entry)
	want.X509SvidTtl, want.Admin, want.DnsNames, want.RevisionNumber = 99, true, []string{"x", "a"}, 1
	wantEqual(t, got, want)
	fetched, _ := ds.FetchEntry(ctx, orig.Id)
	wantEqual(t, fetched, want)

	// A change that makes it a duplicate of other fails and writes nothing,
	// although the same request also changes other fields and children.
	_, err = ds.UpdateEntry(ctx, &types.Entry{Id: orig.Id, Selectors: sel("b", "2"), Hint: "changed", DnsNames: []string{"gone"}},
		&types.EntryMask{Selectors: true, Hint: true, DnsNames: true})
	wantErr(t, err, datastore.ErrAlreadyExists)
	fetched, _ = ds.FetchEntry(ctx, orig.Id)
	wantEqual(t, fetched, want)

	// A nil mask replaces everything but the store-managed fields.
	full := &types.Entry{Id: orig.Id, SpiffeId: sid("td", "/new"), ParentId: sid("td", "/p2"), Selectors: sel("c", "3", "a", "1"),
		X509SvidTtl: 1, JwtSvidTtl: 2, FederatesWith: []string{"x.org"}, Downstream: true, ExpiresAt: 7, StoreSvid: true, Hint: "n",
		CreatedAt: 5, RevisionNumber: 50}
	got, err = ds.UpdateEntry(ctx, full, nil)
	if err != nil {
		t.Fatal(err)
	}
	want = proto.Clone(full).(*types.Entry)
	want.Selectors = sel("a", "1", "c", "3")
	want.CreatedAt, want.RevisionNumber = orig.CreatedAt, 2
	wantEqual(t, got, want)

	// other is untouched.
	fo, _ := ds.FetchEntry(ctx, other.Id)
	wantEqual(t, fo, other)

	_, err = ds.UpdateEntry(ctx, &types.Entry{Id: "missing", SpiffeId: sid("td", "/w"), ParentId: sid("td", "/p")}, nil)
	wantErr(t, err, datastore.ErrNotFound)
}

func testEntriesRevision(t *testing.T, ds datastore.DataStore) {
	rev := func() int64 {
		t.Helper()
		r, err := ds.EntriesRevision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r0 := rev()
	e := mustCreate(t, ds, &types.Entry{SpiffeId: sid("td", "/w"), ParentId: sid("td", "/p"), Selectors: sel("a", "1")})
	r1 := rev()
	if r1 == r0 {
		t.Fatal("revision unchanged by create")
	}
	if _, err := ds.CreateEntry(ctx, e); !errors.Is(err, datastore.ErrAlreadyExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	if rev() != r1 {
		t.Fatal("failed create changed the revision")
	}
	if _, err := ds.UpdateEntry(ctx, &types.Entry{Id: e.Id, Hint: "x"}, &types.EntryMask{Hint: true}); err != nil {
		t.Fatal(err)
	}
	r2 := rev()
	if r2 == r1 {
		t.Fatal("revision unchanged by update")
	}
	if _, err := ds.DeleteEntry(ctx, e.Id); err != nil {
		t.Fatal(err)
	}
	if rev() == r2 {
		t.Fatal("revision unchanged by delete")
	}
}

// testEntryPrune: PruneEntries deletes exactly the entries whose expiry
// is set and past, with their children, returns them, and moves the
// revision only when it deleted something.
func testEntryPrune(t *testing.T, ds datastore.DataStore) {
	now := time.Unix(1_700_000_000, 0)
	expired := mustCreate(t, ds, &types.Entry{SpiffeId: sid("td", "/old"), ParentId: sid("td", "/p"), Selectors: sel("a", "1"),
		ExpiresAt: now.Unix() - 1, FederatesWith: []string{"other.org"}, DnsNames: []string{"old.example"}})
	edge := mustCreate(t, ds, &types.Entry{SpiffeId: sid("td", "/edge"), ParentId: sid("td", "/p"), Selectors: sel("a", "2"), ExpiresAt: now.Unix()})
	never := mustCreate(t, ds, &types.Entry{SpiffeId: sid("td", "/never"), ParentId: sid("td", "/p"), Selectors: sel("a", "3")})
	r0, err := ds.EntriesRevision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pruned, err := ds.PruneEntries(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(pruned) != 1 || pruned[0].Id != expired.Id || protoIDString(pruned[0].SpiffeId) != "spiffe://td/old" {
		t.Fatalf("pruned %v, want only %s", pruned, expired.Id)
	}
	if _, err := ds.FetchEntry(ctx, expired.Id); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("pruned entry still fetched: %v", err)
	}
	for _, e := range []*types.Entry{edge, never} {
		if _, err := ds.FetchEntry(ctx, e.Id); err != nil {
			t.Errorf("entry %s pruned too early: %v", e.Id, err)
		}
	}
	r1, err := ds.EntriesRevision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r1 == r0 {
		t.Error("revision unchanged by a prune that deleted an entry")
	}
	// The same selectors again: the pruned entry's children went with it.
	mustCreate(t, ds, &types.Entry{SpiffeId: sid("td", "/old"), ParentId: sid("td", "/p"), Selectors: sel("a", "1")})
	r2, _ := ds.EntriesRevision(ctx)
	if pruned, err := ds.PruneEntries(ctx, now); err != nil || len(pruned) != 0 {
		t.Fatalf("second prune: %v %v", pruned, err)
	}
	if r3, _ := ds.EntriesRevision(ctx); r3 != r2 {
		t.Error("revision moved by a prune that deleted nothing")
	}
}

// testBundleCount: CountBundles counts every bundle.
func testBundleCount(t *testing.T, ds datastore.DataStore) {
	for i, td := range []string{"", "a.org", "b.org"} {
		if td != "" {
			if _, err := ds.CreateBundle(ctx, &types.Bundle{TrustDomain: td}); err != nil {
				t.Fatal(err)
			}
		}
		n, err := ds.CountBundles(ctx)
		if err != nil || n != int32(i) {
			t.Fatalf("count after %d bundles: %d %v", i, n, err)
		}
	}
}

func protoIDString(id *types.SPIFFEID) string {
	return "spiffe://" + id.GetTrustDomain() + id.GetPath()
}

func ids(entries []*types.Entry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.Id)
	}
	sort.Strings(out)
	return out
}

func testEntryFilters(t *testing.T, ds datastore.DataStore) {
	p1, p2 := sid("td", "/p1"), sid("td", "/p2")
	for _, e := range []*types.Entry{
		{Id: "e1", SpiffeId: sid("td", "/1"), ParentId: p1, Selectors: sel("a", "1"), FederatesWith: []string{"td1"}, Hint: "h1"},
		{Id: "e2", SpiffeId: sid("td", "/2"), ParentId: p1, Selectors: sel("a", "1", "b", "2"), FederatesWith: []string{"td1", "td2"}},
		{Id: "e3", SpiffeId: sid("td", "/3"), ParentId: p2, Selectors: sel("b", "2")},
		{Id: "e4", SpiffeId: sid("td", "/4"), ParentId: p2, Selectors: sel("a", "1", "b", "2", "c", "3"), FederatesWith: []string{"td2", "td3"}, Downstream: true},
		{Id: "e5", SpiffeId: sid("td", "/1"), ParentId: p2, Selectors: sel("c", "3")},
		{Id: "e6", SpiffeId: sid("td", "/6"), ParentId: p2},
	} {
		mustCreate(t, ds, e)
	}
	ab := sel("a", "1", "b", "2")
	tds := []string{"td1", "spiffe://td2", "td1"}
	yes, no, h1 := true, false, "h1"
	for _, tc := range []struct {
		name string
		req  *datastore.ListEntriesRequest
		want []string
	}{
		{"all", &datastore.ListEntriesRequest{}, []string{"e1", "e2", "e3", "e4", "e5", "e6"}},
		{"by spiffe id", &datastore.ListEntriesRequest{BySPIFFEID: "spiffe://td/1"}, []string{"e1", "e5"}},
		{"by parent id", &datastore.ListEntriesRequest{ByParentID: "spiffe://td/p1"}, []string{"e1", "e2"}},
		{"by spiffe and parent", &datastore.ListEntriesRequest{BySPIFFEID: "spiffe://td/1", ByParentID: "spiffe://td/p2"}, []string{"e5"}},
		{"selectors exact", &datastore.ListEntriesRequest{BySelectors: &datastore.SelectorFilter{Selectors: ab, Match: datastore.MatchExact}}, []string{"e2"}},
		{"selectors exact reordered", &datastore.ListEntriesRequest{BySelectors: &datastore.SelectorFilter{Selectors: sel("b", "2", "a", "1", "a", "1"), Match: datastore.MatchExact}}, []string{"e2"}},
		{"selectors subset", &datastore.ListEntriesRequest{BySelectors: &datastore.SelectorFilter{Selectors: ab, Match: datastore.MatchSubset}}, []string{"e1", "e2", "e3"}},
		{"selectors superset", &datastore.ListEntriesRequest{BySelectors: &datastore.SelectorFilter{Selectors: ab, Match: datastore.MatchSuperset}}, []string{"e2", "e4"}},
		{"selectors any", &datastore.ListEntriesRequest{BySelectors: &datastore.SelectorFilter{Selectors: ab, Match: datastore.MatchAny}}, []string{"e1", "e2", "e3", "e4"}},
		{"selectors any none", &datastore.ListEntriesRequest{BySelectors: &datastore.SelectorFilter{Selectors: sel("z", "9"), Match: datastore.MatchAny}}, nil},
		{"federates exact", &datastore.ListEntriesRequest{ByFederatesWith: &datastore.FederatesWithFilter{TrustDomains: tds, Match: datastore.MatchExact}}, []string{"e2"}},
		{"federates subset", &datastore.ListEntriesRequest{ByFederatesWith: &datastore.FederatesWithFilter{TrustDomains: tds, Match: datastore.MatchSubset}}, []string{"e1", "e2"}},
		{"federates superset", &datastore.ListEntriesRequest{ByFederatesWith: &datastore.FederatesWithFilter{TrustDomains: tds, Match: datastore.MatchSuperset}}, []string{"e2"}},
		{"federates any", &datastore.ListEntriesRequest{ByFederatesWith: &datastore.FederatesWithFilter{TrustDomains: tds, Match: datastore.MatchAny}}, []string{"e1", "e2", "e4"}},
		{"hint", &datastore.ListEntriesRequest{ByHint: &h1}, []string{"e1"}},
		{"downstream", &datastore.ListEntriesRequest{ByDownstream: &yes}, []string{"e4"}},
		{"not downstream", &datastore.ListEntriesRequest{ByDownstream: &no}, []string{"e1", "e2", "e3", "e5", "e6"}},
		{"combined", &datastore.ListEntriesRequest{ByParentID: "spiffe://td/p2", BySelectors: &datastore.SelectorFilter{Selectors: ab, Match: datastore.MatchAny}, ByDownstream: &no}, []string{"e3"}},
	} {
		got, next, err := ds.ListEntries(ctx, tc.req)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !slices.Equal(ids(got), tc.want) || next != "" {
			t.Errorf("%s: got %v (next %q), want %v", tc.name, ids(got), next, tc.want)
		}
		n, err := ds.CountEntries(ctx, tc.req)
		if err != nil || int(n) != len(tc.want) {
			t.Errorf("%s: CountEntries = %d, %v; want %d", tc.name, n, err, len(tc.want))
		}
	}
	// Listed entries carry their children like fetched ones.
	got, _, err := ds.ListEntries(ctx, &datastore.ListEntriesRequest{BySPIFFEID: "spiffe://td/4"})
	if err != nil || len(got) != 1 {
		t.Fatalf("list e4: %v %v", got, err)
	}
	fetched, _ := ds.FetchEntry(ctx, "e4")
	wantEqual(t, got[0], fetched)

	if _, _, err := ds.ListEntries(ctx, &datastore.ListEntriesRequest{BySelectors: &datastore.SelectorFilter{Match: datastore.MatchAny}}); err == nil {
		t.Error("empty selector filter accepted")
	}
}

func testEntryPaging(t *testing.T, ds datastore.DataStore) {
	var all []string
	for i := range 7 {
		e := mustCreate(t, ds, &types.Entry{SpiffeId: sid("td", fmt.Sprintf("/%d", i)), ParentId: sid("td", "/p"), Selectors: sel("a", "1")})
		all = append(all, e.Id)
	}
	mustCreate(t, ds, &types.Entry{SpiffeId: sid("td", "/other"), ParentId: sid("td", "/q")})
	sort.Strings(all)
	var got []string
	var sizes []int
	req := &datastore.ListEntriesRequest{ByParentID: "spiffe://td/p", Pagination: &datastore.Pagination{Size: 3}}
	for {
		page, next, err := ds.ListEntries(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(page))
		for _, e := range page {
			got = append(got, e.Id)
		}
		if next == "" {
			break
		}
		req.Pagination.Token = next
	}
	if !slices.Equal(got, all) || !slices.Equal(sizes, []int{3, 3, 1}) {
		t.Fatalf("paged %v in pages %v, want %v in [3 3 1]", got, sizes, all)
	}
	// Exactly one full page: no token for an empty next page.
	_, next, err := ds.ListEntries(ctx, &datastore.ListEntriesRequest{ByParentID: "spiffe://td/p", Pagination: &datastore.Pagination{Size: 7}})
	if err != nil || next != "" {
		t.Fatalf("full page: next %q, %v", next, err)
	}
	// Size 0 means the rest.
	first, next, _ := ds.ListEntries(ctx, &datastore.ListEntriesRequest{ByParentID: "spiffe://td/p", Pagination: &datastore.Pagination{Size: 2}})
	rest, next2, err := ds.ListEntries(ctx, &datastore.ListEntriesRequest{ByParentID: "spiffe://td/p", Pagination: &datastore.Pagination{Token: next}})
	if err != nil || len(first)+len(rest) != 7 || next2 != "" {
		t.Fatalf("size 0 after token: %d + %d entries, next %q, %v", len(first), len(rest), next2, err)
	}
	if _, _, err := ds.ListEntries(ctx, &datastore.ListEntriesRequest{Pagination: &datastore.Pagination{Size: 1, Token: "!!not-a-token"}}); err == nil {
		t.Fatal("invalid page token accepted")
	}
}

func nodeIDs(nodes []*datastore.AttestedNode) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.SPIFFEID)
	}
	return out
}

func testNodeCRUD(t *testing.T, ds datastore.DataStore) {
	n := &datastore.AttestedNode{SPIFFEID: "spiffe://td/agent/1", AttestationType: "tpm", CertSerial: "1", CertNotAfter: 100,
		NewCertSerial: "2", NewCertNotAfter: 200, CanReattest: true, Selectors: sel("tpm", "pcr:1", "tpm", "ek:abc")}
	if err := ds.CreateAttestedNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	wantErr(t, ds.CreateAttestedNode(ctx, n), datastore.ErrAlreadyExists)
	got, err := ds.FetchAttestedNode(ctx, n.SPIFFEID)
	if err != nil {
		t.Fatal(err)
	}
	want := *n
	want.Selectors = sel("tpm", "ek:abc", "tpm", "pcr:1")
	if !nodeEqual(got, &want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if got.Banned() {
		t.Fatal("node with serials is banned")
	}

	// Nil selectors leave them alone; the ban clears both serials.
	upd := &datastore.AttestedNode{SPIFFEID: n.SPIFFEID, AttestationType: "tpm", CertNotAfter: 100}
	if err := ds.UpdateAttestedNode(ctx, upd, n.Serials()); err != nil {
		t.Fatal(err)
	}
	got, _ = ds.FetchAttestedNode(ctx, n.SPIFFEID)
	if !got.Banned() || got.CanReattest || len(got.Selectors) != 2 {
		t.Fatalf("after ban: %+v", got)
	}
	upd.Selectors = []*types.Selector{}
	if err := ds.UpdateAttestedNode(ctx, upd, upd.Serials()); err != nil {
		t.Fatal(err)
	}
	if s, _ := ds.GetNodeSelectors(ctx, n.SPIFFEID); len(s) != 0 {
		t.Fatalf("empty selectors not written: %v", s)
	}
	wantErr(t, ds.UpdateAttestedNode(ctx, &datastore.AttestedNode{SPIFFEID: "spiffe://td/none"}, datastore.NodeSerials{}), datastore.ErrNotFound)
	_, err = ds.FetchAttestedNode(ctx, "spiffe://td/none")
	wantErr(t, err, datastore.ErrNotFound)

	// Selectors may exist without a node.
	if err := ds.SetNodeSelectors(ctx, "spiffe://td/agent/2", sel("b", "2", "a", "1")); err != nil {
		t.Fatal(err)
	}
	s, err := ds.GetNodeSelectors(ctx, "spiffe://td/agent/2")
	if err != nil || !selEqual(s, sel("a", "1", "b", "2")) {
		t.Fatalf("GetNodeSelectors = %v, %v", s, err)
	}
	if err := ds.SetNodeSelectors(ctx, n.SPIFFEID, sel("x", "y")); err != nil {
		t.Fatal(err)
	}
	deleted, err := ds.DeleteAttestedNode(ctx, n.SPIFFEID)
	if err != nil || deleted.SPIFFEID != n.SPIFFEID || !selEqual(deleted.Selectors, sel("x", "y")) {
		t.Fatalf("DeleteAttestedNode = %+v, %v", deleted, err)
	}
	if s, _ := ds.GetNodeSelectors(ctx, n.SPIFFEID); len(s) != 0 {
		t.Fatalf("selectors survived node deletion: %v", s)
	}
	_, err = ds.DeleteAttestedNode(ctx, n.SPIFFEID)
	wantErr(t, err, datastore.ErrNotFound)
}

func selEqual(a, b []*types.Selector) bool {
	return slices.EqualFunc(a, b, func(x, y *types.Selector) bool { return proto.Equal(x, y) })
}

func nodeEqual(a, b *datastore.AttestedNode) bool {
	return a.SPIFFEID == b.SPIFFEID && a.AttestationType == b.AttestationType && a.CertSerial == b.CertSerial &&
		a.CertNotAfter == b.CertNotAfter && a.NewCertSerial == b.NewCertSerial && a.NewCertNotAfter == b.NewCertNotAfter &&
		a.CanReattest == b.CanReattest && selEqual(a.Selectors, b.Selectors)
}

func testNodeFilters(t *testing.T, ds datastore.DataStore) {
	for _, n := range []*datastore.AttestedNode{
		{SPIFFEID: "spiffe://td/n1", AttestationType: "tpm", CertSerial: "1", CertNotAfter: 100, CanReattest: true, Selectors: sel("a", "1")},
		{SPIFFEID: "spiffe://td/n2", AttestationType: "join_token", CertNotAfter: 200, Selectors: sel("a", "1", "b", "2")},
		{SPIFFEID: "spiffe://td/n3", AttestationType: "tpm", NewCertSerial: "3", CertNotAfter: 300},
	} {
		if err := ds.CreateAttestedNode(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	yes, no := true, false
	for _, tc := range []struct {
		name string
		req  *datastore.ListAttestedNodesRequest
		want []string
	}{
		{"all", nil, []string{"spiffe://td/n1", "spiffe://td/n2", "spiffe://td/n3"}},
		{"type", &datastore.ListAttestedNodesRequest{ByAttestationType: "tpm"}, []string{"spiffe://td/n1", "spiffe://td/n3"}},
		{"banned", &datastore.ListAttestedNodesRequest{ByBanned: &yes}, []string{"spiffe://td/n2"}},
		{"not banned", &datastore.ListAttestedNodesRequest{ByBanned: &no}, []string{"spiffe://td/n1", "spiffe://td/n3"}},
		{"can reattest", &datastore.ListAttestedNodesRequest{ByCanReattest: &yes}, []string{"spiffe://td/n1"}},
		{"cannot reattest", &datastore.ListAttestedNodesRequest{ByCanReattest: &no}, []string{"spiffe://td/n2", "spiffe://td/n3"}},
		{"expires before", &datastore.ListAttestedNodesRequest{ExpiresBefore: 250}, []string{"spiffe://td/n1", "spiffe://td/n2"}},
		{"selectors exact", &datastore.ListAttestedNodesRequest{BySelectors: &datastore.SelectorFilter{Selectors: sel("a", "1"), Match: datastore.MatchExact}}, []string{"spiffe://td/n1"}},
		{"selectors superset", &datastore.ListAttestedNodesRequest{BySelectors: &datastore.SelectorFilter{Selectors: sel("a", "1"), Match: datastore.MatchSuperset}}, []string{"spiffe://td/n1", "spiffe://td/n2"}},
		{"selectors subset", &datastore.ListAttestedNodesRequest{BySelectors: &datastore.SelectorFilter{Selectors: sel("a", "1", "b", "2"), Match: datastore.MatchSubset}}, []string{"spiffe://td/n1", "spiffe://td/n2"}},
		{"selectors any", &datastore.ListAttestedNodesRequest{BySelectors: &datastore.SelectorFilter{Selectors: sel("b", "2"), Match: datastore.MatchAny}}, []string{"spiffe://td/n2"}},
		{"combined", &datastore.ListAttestedNodesRequest{ByAttestationType: "tpm", ExpiresBefore: 250}, []string{"spiffe://td/n1"}},
	} {
		got, next, err := ds.ListAttestedNodes(ctx, tc.req)
		if err != nil || next != "" || !slices.Equal(nodeIDs(got), tc.want) {
			t.Errorf("%s: got %v (next %q, %v), want %v", tc.name, nodeIDs(got), next, err, tc.want)
		}
		n, err := ds.CountAttestedNodes(ctx, tc.req)
		if err != nil || int(n) != len(tc.want) {
			t.Errorf("%s: CountAttestedNodes = %d, %v; want %d", tc.name, n, err, len(tc.want))
		}
	}
	got, _, _ := ds.ListAttestedNodes(ctx, &datastore.ListAttestedNodesRequest{ByAttestationType: "join_token"})
	if len(got) != 1 || !selEqual(got[0].Selectors, sel("a", "1", "b", "2")) {
		t.Fatalf("listed node lacks its selectors: %+v", got)
	}

	var paged []string
	req := &datastore.ListAttestedNodesRequest{Pagination: &datastore.Pagination{Size: 2}}
	for {
		nodes, next, err := ds.ListAttestedNodes(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, nodeIDs(nodes)...)
		if next == "" {
			break
		}
		req.Pagination.Token = next
	}
	if !slices.Equal(paged, []string{"spiffe://td/n1", "spiffe://td/n2", "spiffe://td/n3"}) {
		t.Fatalf("paged nodes %v", paged)
	}
}

func testJoinTokens(t *testing.T, ds datastore.DataStore) {
	now := time.Unix(1_700_000_000, 0)
	for _, jt := range []*datastore.JoinToken{
		{Token: "live", ExpiresAt: now.Add(time.Hour)},
		{Token: "spare", ExpiresAt: now.Add(time.Hour)},
		{Token: "old", ExpiresAt: now.Add(-time.Hour)},
	} {
		if err := ds.CreateJoinToken(ctx, jt); err != nil {
			t.Fatal(err)
		}
	}
	wantErr(t, ds.CreateJoinToken(ctx, &datastore.JoinToken{Token: "live", ExpiresAt: now}), datastore.ErrAlreadyExists)

	got, err := ds.FetchJoinToken(ctx, "live")
	if err != nil || got.Token != "live" || !got.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("FetchJoinToken = %+v, %v", got, err)
	}
	_, err = ds.FetchJoinToken(ctx, "never")
	wantErr(t, err, datastore.ErrNotFound)

	// A node write spends its token with the node, once.
	node := &datastore.AttestedNode{SPIFFEID: "spiffe://td/jt-1", AttestationType: "join_token", CertSerial: "1", SpendJoinToken: "live"}
	if err := ds.CreateAttestedNode(ctx, node); err != nil {
		t.Fatal(err)
	}
	_, err = ds.FetchJoinToken(ctx, "live")
	wantErr(t, err, datastore.ErrNotFound)
	other := &datastore.AttestedNode{SPIFFEID: "spiffe://td/jt-2", AttestationType: "join_token", CertSerial: "2", SpendJoinToken: "live"}
	wantErr(t, ds.CreateAttestedNode(ctx, other), datastore.ErrJoinTokenSpent)
	_, err = ds.FetchAttestedNode(ctx, other.SPIFFEID)
	wantErr(t, err, datastore.ErrNotFound) // a refused spend writes nothing
	wantErr(t, ds.CreateAttestedNode(ctx, &datastore.AttestedNode{SPIFFEID: "spiffe://td/jt-3", SpendJoinToken: "never"}), datastore.ErrJoinTokenSpent)

	// A write that fails after its spend leaves the token unspent.
	dup := &datastore.AttestedNode{SPIFFEID: node.SPIFFEID, AttestationType: "join_token", CertSerial: "9", SpendJoinToken: "spare"}
	wantErr(t, ds.CreateAttestedNode(ctx, dup), datastore.ErrAlreadyExists)
	wantErr(t, ds.UpdateAttestedNode(ctx, dup, datastore.NodeSerials{CertSerial: "not-the-stored-one"}), datastore.ErrConflict)
	if _, err := ds.FetchJoinToken(ctx, "spare"); err != nil {
		t.Fatalf("a failed node write spent its token: %v", err)
	}

	// An update spends too, and a spent token refuses it before it
	// changes the node.
	if err := ds.UpdateAttestedNode(ctx, dup, datastore.NodeSerials{CertSerial: "1"}); err != nil {
		t.Fatal(err)
	}
	_, err = ds.FetchJoinToken(ctx, "spare")
	wantErr(t, err, datastore.ErrNotFound)
	again := &datastore.AttestedNode{SPIFFEID: node.SPIFFEID, AttestationType: "join_token", CertSerial: "10", SpendJoinToken: "spare"}
	wantErr(t, ds.UpdateAttestedNode(ctx, again, datastore.NodeSerials{CertSerial: "9"}), datastore.ErrJoinTokenSpent)
	if n, err := ds.FetchAttestedNode(ctx, node.SPIFFEID); err != nil || n.CertSerial != "9" || n.SpendJoinToken != "" {
		t.Fatalf("node after the refused update = %+v, %v; want serial 9, no token", n, err)
	}

	if err := ds.CreateJoinToken(ctx, &datastore.JoinToken{Token: "fresh", ExpiresAt: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := ds.PruneJoinTokens(ctx, now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	_, err = ds.FetchJoinToken(ctx, "old")
	wantErr(t, err, datastore.ErrNotFound)
	if _, err := ds.FetchJoinToken(ctx, "fresh"); err != nil {
		t.Fatalf("prune removed a live token: %v", err)
	}
}

// testJoinTokenRace: of node writes racing to spend one token, exactly
// one records its node.
func testJoinTokenRace(t *testing.T, ds datastore.DataStore) {
	const n = 16
	now := time.Now()
	for round := range 3 {
		token := fmt.Sprintf("race-%d", round)
		if err := ds.CreateJoinToken(ctx, &datastore.JoinToken{Token: token, ExpiresAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, n)
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = ds.CreateAttestedNode(ctx, &datastore.AttestedNode{
					SPIFFEID: fmt.Sprintf("spiffe://td/race-%d-%d", round, i), CertSerial: "1", SpendJoinToken: token,
				})
			}()
		}
		close(start)
		wg.Wait()
		ok := 0
		for i, err := range errs {
			_, ferr := ds.FetchAttestedNode(ctx, fmt.Sprintf("spiffe://td/race-%d-%d", round, i))
			switch {
			case err == nil:
				ok++
				if ferr != nil {
					t.Errorf("racer %d succeeded but its node: %v", i, ferr)
				}
			case !errors.Is(err, datastore.ErrJoinTokenSpent):
				t.Errorf("unexpected error: %v", err)
			case !errors.Is(ferr, datastore.ErrNotFound):
				t.Errorf("racer %d was refused but its node is stored: %v", i, ferr)
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: %d writes spent the token, want 1", round, ok)
		}
	}
}

// testCert returns a self-signed CA certificate valid until notAfter.
func testCert(t *testing.T, notAfter time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             notAfter.Add(-48 * time.Hour),
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func testBundles(t *testing.T, ds datastore.DataStore) {
	now := time.Now()
	b := &types.Bundle{
		TrustDomain:     "example.org",
		X509Authorities: []*types.X509Certificate{{Asn1: testCert(t, now.Add(time.Hour))}},
		JwtAuthorities:  []*types.JWTKey{{KeyId: "k1", PublicKey: []byte("pk1"), ExpiresAt: 100}},
		RefreshHint:     60,
		SequenceNumber:  1,
	}
	got, err := ds.CreateBundle(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, got, b)
	_, err = ds.CreateBundle(ctx, b)
	wantErr(t, err, datastore.ErrAlreadyExists)
	got, err = ds.FetchBundle(ctx, "spiffe://example.org")
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, got, b)
	_, err = ds.FetchBundle(ctx, "missing.org")
	wantErr(t, err, datastore.ErrNotFound)

	// Mask: only the refresh hint changes.
	got, err = ds.UpdateBundle(ctx, &types.Bundle{TrustDomain: "example.org", RefreshHint: 5}, &types.BundleMask{RefreshHint: true})
	if err != nil {
		t.Fatal(err)
	}
	want := proto.Clone(b).(*types.Bundle)
	want.RefreshHint = 5
	wantEqual(t, got, want)
	got, _ = ds.FetchBundle(ctx, "example.org")
	wantEqual(t, got, want)
	// Nil mask: everything.
	repl := &types.Bundle{TrustDomain: "example.org", SequenceNumber: 9}
	got, err = ds.UpdateBundle(ctx, repl, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, got, repl)
	_, err = ds.UpdateBundle(ctx, &types.Bundle{TrustDomain: "missing.org"}, nil)
	wantErr(t, err, datastore.ErrNotFound)

	// SetBundle creates and replaces.
	other := &types.Bundle{TrustDomain: "other.org", SequenceNumber: 3}
	if _, err := ds.SetBundle(ctx, other); err != nil {
		t.Fatal(err)
	}
	other.RefreshHint = 7
	if _, err := ds.SetBundle(ctx, other); err != nil {
		t.Fatal(err)
	}
	got, _ = ds.FetchBundle(ctx, "other.org")
	wantEqual(t, got, other)

	// Listing and paging in trust domain order.
	if _, err := ds.CreateBundle(ctx, &types.Bundle{TrustDomain: "a.org"}); err != nil {
		t.Fatal(err)
	}
	var names []string
	p := &datastore.Pagination{Size: 2}
	for {
		page, next, err := ds.ListBundles(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page {
			names = append(names, b.TrustDomain)
		}
		if next == "" {
			break
		}
		p.Token = next
	}
	if !slices.Equal(names, []string{"a.org", "example.org", "other.org"}) {
		t.Fatalf("listed %v", names)
	}
	all, next, err := ds.ListBundles(ctx, nil)
	if err != nil || len(all) != 3 || next != "" {
		t.Fatalf("ListBundles(nil) = %d bundles, %q, %v", len(all), next, err)
	}

	if err := ds.DeleteBundle(ctx, "spiffe://a.org"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, ds.DeleteBundle(ctx, "a.org"), datastore.ErrNotFound)
}

func testBundleAppendPrune(t *testing.T, ds datastore.DataStore) {
	now := time.Now()
	old, cur, next := testCert(t, now.Add(-time.Hour)), testCert(t, now.Add(time.Hour)), testCert(t, now.Add(2*time.Hour))

	// Append to a missing bundle creates it (deduping the input).
	got, err := ds.AppendBundle(ctx, &types.Bundle{TrustDomain: "td.org", SequenceNumber: 1,
		X509Authorities: []*types.X509Certificate{{Asn1: old}, {Asn1: old}},
		JwtAuthorities:  []*types.JWTKey{{KeyId: "old", ExpiresAt: now.Add(-time.Hour).Unix()}, {KeyId: "forever"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.X509Authorities) != 1 || len(got.JwtAuthorities) != 2 || got.SequenceNumber != 1 {
		t.Fatalf("created by append: %v", got)
	}
	// Nothing new: no change, no sequence bump.
	got, err = ds.AppendBundle(ctx, &types.Bundle{TrustDomain: "td.org",
		X509Authorities: []*types.X509Certificate{{Asn1: old}}, JwtAuthorities: []*types.JWTKey{{KeyId: "old"}}})
	if err != nil || got.SequenceNumber != 1 || len(got.X509Authorities) != 1 {
		t.Fatalf("append of known authorities: %v, %v", got, err)
	}
	got, err = ds.AppendBundle(ctx, &types.Bundle{TrustDomain: "td.org",
		X509Authorities: []*types.X509Certificate{{Asn1: old}, {Asn1: cur}}, JwtAuthorities: []*types.JWTKey{{KeyId: "new", ExpiresAt: now.Add(time.Hour).Unix()}}})
	if err != nil || got.SequenceNumber != 2 || len(got.X509Authorities) != 2 || len(got.JwtAuthorities) != 3 {
		t.Fatalf("append of new authorities: %v, %v", got, err)
	}
	fetched, _ := ds.FetchBundle(ctx, "td.org")
	wantEqual(t, fetched, got)

	changed, err := ds.PruneBundle(ctx, "td.org", now)
	if err != nil || !changed {
		t.Fatalf("PruneBundle = %v, %v", changed, err)
	}
	fetched, _ = ds.FetchBundle(ctx, "td.org")
	if len(fetched.X509Authorities) != 1 || string(fetched.X509Authorities[0].Asn1) != string(cur) || fetched.SequenceNumber != 3 {
		t.Fatalf("after prune X.509: %v", fetched)
	}
	var kids []string
	for _, k := range fetched.JwtAuthorities {
		kids = append(kids, k.KeyId)
	}
	if !slices.Equal(kids, []string{"forever", "new"}) {
		t.Fatalf("after prune JWT keys %v", kids)
	}
	changed, err = ds.PruneBundle(ctx, "td.org", now)
	if err != nil || changed {
		t.Fatalf("second prune = %v, %v", changed, err)
	}
	// The last X.509 authority survives even when expired.
	if _, err := ds.AppendBundle(ctx, &types.Bundle{TrustDomain: "td.org", X509Authorities: []*types.X509Certificate{{Asn1: next}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.PruneBundle(ctx, "td.org", now.Add(10*time.Hour)); err != nil {
		t.Fatal(err)
	}
	fetched, _ = ds.FetchBundle(ctx, "td.org")
	if len(fetched.X509Authorities) == 0 {
		t.Fatal("prune removed every X.509 authority")
	}
	_, err = ds.PruneBundle(ctx, "missing.org", now)
	wantErr(t, err, datastore.ErrNotFound)
}

func testBundleModify(t *testing.T, ds datastore.DataStore) {
	now := time.Now()
	a, b := testCert(t, now.Add(time.Hour)), testCert(t, now.Add(2*time.Hour))
	if _, err := ds.AppendBundle(ctx, &types.Bundle{TrustDomain: "mod.org", SequenceNumber: 4,
		X509Authorities: []*types.X509Certificate{{Asn1: a}, {Asn1: b}}}); err != nil {
		t.Fatal(err)
	}
	got, err := ds.ModifyBundle(ctx, "spiffe://mod.org", func(bd *types.Bundle) error {
		bd.X509Authorities[0].Tainted = true
		return nil
	})
	if err != nil || got.SequenceNumber != 5 || !got.X509Authorities[0].Tainted || got.X509Authorities[1].Tainted {
		t.Fatalf("ModifyBundle = %v, %v", got, err)
	}
	fetched, _ := ds.FetchBundle(ctx, "mod.org")
	wantEqual(t, fetched, got)

	// A refusal by fn changes nothing and comes back to the caller.
	refused := errors.New("refused")
	_, err = ds.ModifyBundle(ctx, "mod.org", func(bd *types.Bundle) error {
		bd.X509Authorities = nil
		return refused
	})
	wantErr(t, err, refused)
	fetched, _ = ds.FetchBundle(ctx, "mod.org")
	wantEqual(t, fetched, got)

	_, err = ds.ModifyBundle(ctx, "missing.org", func(*types.Bundle) error { return nil })
	wantErr(t, err, datastore.ErrNotFound)
}

func testBundleConcurrentAppend(t *testing.T, ds datastore.DataStore) {
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = ds.AppendBundle(ctx, &types.Bundle{TrustDomain: "race.org", JwtAuthorities: []*types.JWTKey{{KeyId: fmt.Sprint(i)}}})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	b, err := ds.FetchBundle(ctx, "race.org")
	if err != nil {
		t.Fatal(err)
	}
	if len(b.JwtAuthorities) != n || b.SequenceNumber != n-1 {
		t.Fatalf("after %d concurrent appends: %d keys, sequence %d (lost update)", n, len(b.JwtAuthorities), b.SequenceNumber)
	}
}

func testCAJournal(t *testing.T, ds datastore.DataStore) {
	_, err := ds.FetchCAJournal(ctx, "server")
	wantErr(t, err, datastore.ErrNotFound)
	_, err = ds.FindCAJournal(ctx, []string{"aa", ""})
	wantErr(t, err, datastore.ErrNotFound)
	_, err = ds.FindCAJournal(ctx, nil)
	wantErr(t, err, datastore.ErrNotFound)
	for _, j := range []*datastore.CAJournal{
		{Name: "server", ActiveX509AuthorityID: "aa", ExpiresAt: 100, Data: []byte("v1")},
		{Name: "server", ActiveX509AuthorityID: "bb", ExpiresAt: 200, Data: []byte{0, 1, 2, 255}},
		{Name: "server", ActiveX509AuthorityID: "bb", ExpiresAt: 300, Data: []byte{}},
	} {
		if err := ds.SetCAJournal(ctx, j); err != nil {
			t.Fatal(err)
		}
		got, err := ds.FetchCAJournal(ctx, "server")
		if err != nil || got.Name != j.Name || got.ActiveX509AuthorityID != j.ActiveX509AuthorityID ||
			got.ExpiresAt != j.ExpiresAt || string(got.Data) != string(j.Data) {
			t.Fatalf("FetchCAJournal = %+v, %v; want %+v", got, err, j)
		}
	}
	if err := ds.SetCAJournal(ctx, &datastore.CAJournal{Name: "other", ActiveX509AuthorityID: "cc", ExpiresAt: 50, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := ds.SetCAJournal(ctx, &datastore.CAJournal{Name: "legacy", Data: []byte("l")}); err != nil {
		t.Fatal(err)
	}
	if got, _ := ds.FetchCAJournal(ctx, "server"); len(got.Data) != 0 {
		t.Fatalf("journals are not separate: %q", got.Data)
	}
	// A server finds its own journal by the authority of its active CA,
	// whichever of its keys holds it; the replaced authority no longer
	// finds it, and an empty ID never matches a row without one.
	for _, c := range []struct {
		ids  []string
		want string
	}{
		{[]string{"zz", "bb"}, "server"},
		{[]string{"cc", "bb"}, "other"},
		{[]string{"aa"}, ""},
		{[]string{""}, ""},
	} {
		got, err := ds.FindCAJournal(ctx, c.ids)
		if c.want == "" {
			wantErr(t, err, datastore.ErrNotFound)
			continue
		}
		if err != nil || got.Name != c.want {
			t.Fatalf("FindCAJournal(%q) = %+v, %v; want %q", c.ids, got, err, c.want)
		}
	}
	// Pruning takes the journals whose authorities all expired, and keeps
	// one whose expiry is unknown.
	if n, err := ds.PruneCAJournals(ctx, time.Unix(300, 0)); err != nil || n != 1 {
		t.Fatalf("PruneCAJournals = %d, %v; want 1", n, err)
	}
	_, err = ds.FetchCAJournal(ctx, "other")
	wantErr(t, err, datastore.ErrNotFound)
	for _, name := range []string{"server", "legacy"} {
		if _, err := ds.FetchCAJournal(ctx, name); err != nil {
			t.Fatalf("%s pruned: %v", name, err)
		}
	}
	if n, err := ds.PruneCAJournals(ctx, time.Unix(301, 0)); err != nil || n != 1 {
		t.Fatalf("PruneCAJournals = %d, %v; want 1", n, err)
	}
}
