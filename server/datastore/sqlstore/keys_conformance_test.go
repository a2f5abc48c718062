package sqlstore

import (
	"errors"
	"slices"
	"testing"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// testKeysExact: keys compare byte for byte on every engine. Case and
// trailing spaces make different keys (MySQL's default collations fold
// case, and its PAD SPACE collations ignore trailing spaces), paging runs
// in byte order, and four-byte UTF-8 survives (MySQL's utf8 is three).
func testKeysExact(t *testing.T, ds datastore.DataStore) {
	idsInByteOrder := []string{"K", "k", "k ", "é", "😀"}
	for _, id := range []string{"😀", "k ", "K", "é", "k"} {
		mustCreate(t, ds, &types.Entry{Id: id, SpiffeId: sid("td", "/"+id), ParentId: sid("td", "/p"), Hint: "h" + id})
	}
	var paged []string
	req := &datastore.ListEntriesRequest{Pagination: &datastore.Pagination{Size: 2}}
	for {
		page, next, err := ds.ListEntries(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			paged = append(paged, e.Id)
		}
		if next == "" {
			break
		}
		req.Pagination.Token = next
	}
	if !slices.Equal(paged, idsInByteOrder) {
		t.Fatalf("paged %q, want %q", paged, idsInByteOrder)
	}
	e, err := ds.FetchEntry(ctx, "😀")
	if err != nil || e.Hint != "h😀" || protoIDString(e.SpiffeId) != "spiffe://td/😀" {
		t.Fatalf("four-byte UTF-8 round trip: %v, %v", e, err)
	}
	hint := "hk"
	got, _, err := ds.ListEntries(ctx, &datastore.ListEntriesRequest{ByHint: &hint})
	if err != nil || len(got) != 1 || got[0].Id != "k" {
		t.Fatalf("by hint %q: %v, %v; want only k", hint, got, err)
	}

	// Selector sets that differ only in case or a trailing space are not
	// duplicates, and filters tell them apart.
	for _, v := range []string{"v", "v ", "V"} {
		mustCreate(t, ds, &types.Entry{SpiffeId: sid("td", "/w"), ParentId: sid("td", "/p"), Selectors: sel("t", v)})
	}
	_, err = ds.CreateEntry(ctx, &types.Entry{SpiffeId: sid("td", "/w"), ParentId: sid("td", "/p"), Selectors: sel("t", "v ")})
	wantErr(t, err, datastore.ErrAlreadyExists)
	got, _, err = ds.ListEntries(ctx, &datastore.ListEntriesRequest{BySelectors: &datastore.SelectorFilter{Selectors: sel("t", "v"), Match: datastore.MatchExact}})
	if err != nil || len(got) != 1 || got[0].Selectors[0].Value != "v" {
		t.Fatalf("exact selector t:v: %v, %v", got, err)
	}

	for _, id := range []string{"spiffe://td/n", "spiffe://td/n ", "spiffe://td/N"} {
		if err := ds.CreateAttestedNode(ctx, &datastore.AttestedNode{SPIFFEID: id, AttestationType: "x", CertSerial: "1"}); err != nil {
			t.Fatalf("node %q: %v", id, err)
		}
	}
	if n, err := ds.FetchAttestedNode(ctx, "spiffe://td/n "); err != nil || n.SPIFFEID != "spiffe://td/n " {
		t.Fatalf("node with a trailing space: %v, %v", n, err)
	}
}

// testNodeUpdateUnchanged: an update that writes a node's current values
// found the node (MySQL counts only changed rows unless told otherwise).
func testNodeUpdateUnchanged(t *testing.T, ds datastore.DataStore) {
	n := &datastore.AttestedNode{SPIFFEID: "spiffe://td/agent", AttestationType: "join_token", CertSerial: "1", CertNotAfter: 10}
	if err := ds.CreateAttestedNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := ds.UpdateAttestedNode(ctx, n, n.Serials()); err != nil {
			t.Fatalf("update with the current values: %v", err)
		}
	}
	err := ds.UpdateAttestedNode(ctx, &datastore.AttestedNode{SPIFFEID: "spiffe://td/other"}, datastore.NodeSerials{})
	if !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("update of a missing node: %v, want ErrNotFound", err)
	}
}
