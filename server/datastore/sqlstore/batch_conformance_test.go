package sqlstore

import (
	"errors"
	"slices"
	"testing"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// testEntryBatch: CreateEntries creates a batch in one transaction; an
// entry refused as a duplicate (of a stored entry, of one earlier in the
// batch, of a stored ID) or without a parent ID is refused alone, and the
// others are stored, each with its event.
func testEntryBatch(t *testing.T, ds datastore.DataStore) {
	stored := mustCreate(t, ds, &types.Entry{SpiffeId: sid("td", "/stored"), ParentId: sid("td", "/p"), Selectors: sel("a", "1")})
	_, last := eventKeys(t, ds, datastore.EntryEvents, 0)
	batch := []*types.Entry{
		{SpiffeId: sid("td", "/w1"), ParentId: sid("td", "/p"), Selectors: sel("a", "1")},
		{SpiffeId: sid("td", "/stored"), ParentId: sid("td", "/p"), Selectors: sel("a", "1")}, // a stored one
		{SpiffeId: sid("td", "/w2"), ParentId: sid("td", "/p"), Selectors: sel("a", "2")},
		{SpiffeId: sid("td", "/w1"), ParentId: sid("td", "/p"), Selectors: sel("a", "1")}, // the first again
		{Id: stored.Id, SpiffeId: sid("td", "/w3"), ParentId: sid("td", "/p"), Selectors: sel("a", "3")},
		{SpiffeId: sid("td", "/w4"), Selectors: sel("a", "4")}, // no parent
		{SpiffeId: sid("td", "/w5"), ParentId: sid("td", "/p"), Selectors: sel("a", "5", "b", "5"), Hint: "h"},
	}
	created, errs, err := ds.CreateEntries(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	if len(created) != len(batch) || len(errs) != len(batch) {
		t.Fatalf("%d results and %d errors for %d entries", len(created), len(errs), len(batch))
	}
	var made []string
	for i, want := range []string{"ok", "dup", "ok", "dup", "dup", "invalid", "ok"} {
		switch want {
		case "ok":
			if errs[i] != nil || created[i] == nil || created[i].SpiffeId.Path != batch[i].SpiffeId.Path || created[i].Id == "" {
				t.Fatalf("entry %d: %v, %v; want it created", i, created[i], errs[i])
			}
			got, err := ds.FetchEntry(ctx, created[i].Id)
			if err != nil || got.Hint != batch[i].Hint || len(got.Selectors) != len(batch[i].Selectors) {
				t.Fatalf("entry %d as stored: %v, %v", i, got, err)
			}
			made = append(made, created[i].Id)
		case "dup":
			if !errors.Is(errs[i], datastore.ErrAlreadyExists) || created[i] != nil {
				t.Fatalf("entry %d: %v, %v; want ErrAlreadyExists", i, created[i], errs[i])
			}
		case "invalid":
			if errs[i] == nil || errors.Is(errs[i], datastore.ErrAlreadyExists) || created[i] != nil {
				t.Fatalf("entry %d: %v, %v; want it refused", i, created[i], errs[i])
			}
		}
	}
	if n, err := ds.CountEntries(ctx, &datastore.ListEntriesRequest{}); err != nil || n != 4 {
		t.Fatalf("%d entries stored, %v; want the stored one and 3 new", n, err)
	}
	keys, _ := eventKeys(t, ds, datastore.EntryEvents, last)
	slices.Sort(keys)
	slices.Sort(made)
	if !slices.Equal(keys, made) {
		t.Fatalf("events %v, want one for each created entry %v", keys, made)
	}
	// A batch of refusals only stores nothing and is no error.
	if _, errs, err := ds.CreateEntries(ctx, batch[1:2]); err != nil || !errors.Is(errs[0], datastore.ErrAlreadyExists) {
		t.Fatalf("CreateEntries of a duplicate alone: %v, %v", errs, err)
	}
}
