package sqlstore

import (
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// eventKeys lists the keys of kind's events after afterID, in ID order,
// and returns the last ID seen.
func eventKeys(t *testing.T, ds datastore.DataStore, kind datastore.EventKind, afterID int64) ([]string, int64) {
	t.Helper()
	evs, err := ds.ListEvents(ctx, kind, afterID, 0, datastore.RequireCurrent)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	last := afterID
	for _, ev := range evs {
		if ev.ID <= last {
			t.Fatalf("events out of order or not after %d: %v", afterID, evs)
		}
		keys = append(keys, ev.Key)
		last = ev.ID
	}
	return keys, last
}

// testEntry is an entry of trust domain td for the event tests.
type testEntry struct {
	spiffe, parent string
	sels, dns      []string
	expiresAt      int64
}

func (e testEntry) entry() *types.Entry {
	return &types.Entry{SpiffeId: sid("td", e.spiffe), ParentId: sid("td", e.parent), Selectors: sel(e.sels...),
		DnsNames: e.dns, ExpiresAt: e.expiresAt}
}

func itoa(i int) string { return strconv.Itoa(i) }

func wantKeys(t *testing.T, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("event keys %q, want %q", got, want)
	}
}

// testEntryEvents: every entry write appends its entry's event in its own
// transaction, and a write that fails appends none.
func testEntryEvents(t *testing.T, ds datastore.DataStore) {
	keys, last := eventKeys(t, ds, datastore.EntryEvents, 0)
	wantKeys(t, keys)
	a := mustCreate(t, ds, testEntry{spiffe: "/a", parent: "/p", sels: []string{"a", "1"}}.entry())
	b := mustCreate(t, ds, testEntry{spiffe: "/b", parent: "/p", sels: []string{"b", "1"}, expiresAt: time.Now().Unix() - 10}.entry())
	keys, last = eventKeys(t, ds, datastore.EntryEvents, last)
	wantKeys(t, keys, a.Id, b.Id)

	// A duplicate is refused and leaves no event behind.
	if _, err := ds.CreateEntry(ctx, testEntry{spiffe: "/a", parent: "/p", sels: []string{"a", "1"}}.entry()); !errors.Is(err, datastore.ErrAlreadyExists) {
		t.Fatalf("duplicate: %v", err)
	}
	a.Hint = "h"
	if _, err := ds.UpdateEntry(ctx, a, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.PruneEntries(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.DeleteEntry(ctx, a.Id); err != nil {
		t.Fatal(err)
	}
	keys, last = eventKeys(t, ds, datastore.EntryEvents, last)
	wantKeys(t, keys, a.Id, b.Id, a.Id)
	if got, err := ds.LastEventID(ctx, datastore.EntryEvents); err != nil || got != last {
		t.Fatalf("LastEventID = %d, %v; want %d", got, err, last)
	}
	// Node events are another table.
	if keys, _ := eventKeys(t, ds, datastore.NodeEvents, 0); len(keys) != 0 {
		t.Fatalf("node events after entry writes: %q", keys)
	}
	// Both entries are gone now.
	if got, err := ds.FetchEntries(ctx, []string{a.Id, b.Id}); err != nil || len(got) != 0 {
		t.Fatalf("FetchEntries of deleted entries = %v, %v", got, err)
	}
}

// testEntryFetchMany: FetchEntries returns the entries that exist, in ID
// order, across more IDs than one IN list holds.
func testEntryFetchMany(t *testing.T, ds datastore.DataStore) {
	var ids []string
	for i := range maxInList + 3 {
		e := mustCreate(t, ds, testEntry{spiffe: "/w" + itoa(i), parent: "/p", sels: []string{"a", itoa(i)}, dns: []string{"d" + itoa(i)}}.entry())
		ids = append(ids, e.Id)
	}
	want, _, err := ds.ListEntries(ctx, &datastore.ListEntriesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	asked := append([]string{"absent"}, ids...)
	slices.Reverse(asked)
	got, err := ds.FetchEntries(ctx, asked)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("FetchEntries returned %d entries, want %d", len(got), len(want))
	}
	for i := range want {
		wantEqual(t, got[i], want[i])
	}
}

// testNodeEvents: node writes (create, update, selectors, delete) append
// the node's event; a refused conditional write appends none.
func testNodeEvents(t *testing.T, ds datastore.DataStore) {
	const id = "spiffe://td/spire/agent/x/1"
	n := &datastore.AttestedNode{SPIFFEID: id, AttestationType: "x", CertSerial: "1", CertNotAfter: 10, Selectors: sel("a", "1")}
	if err := ds.CreateAttestedNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	keys, last := eventKeys(t, ds, datastore.NodeEvents, 0)
	wantKeys(t, keys, id)
	up := *n
	up.CertSerial = "2"
	if err := ds.UpdateAttestedNode(ctx, &up, n.Serials()); err != nil {
		t.Fatal(err)
	}
	wantConflict(t, ds.UpdateAttestedNode(ctx, &up, n.Serials()), "stale update")
	if err := ds.SetNodeSelectors(ctx, id, sel("b", "2")); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.DeleteAttestedNode(ctx, id); err != nil {
		t.Fatal(err)
	}
	keys, last = eventKeys(t, ds, datastore.NodeEvents, last)
	wantKeys(t, keys, id, id, id)

	// FetchEvents finds events by ID (a gap filled later), skipping IDs
	// that do not exist.
	evs, err := ds.FetchEvents(ctx, datastore.NodeEvents, []int64{last, last + 100, 1}, datastore.RequireCurrent)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].ID != 1 || evs[1].ID != last || evs[1].Key != id {
		t.Fatalf("FetchEvents = %+v, want IDs 1 and %d", evs, last)
	}
	// A limit returns the first events after the ID.
	evs, err = ds.ListEvents(ctx, datastore.NodeEvents, 1, 2, datastore.RequireCurrent)
	if err != nil || len(evs) != 2 || evs[0].ID <= 1 || evs[1].ID <= evs[0].ID {
		t.Fatalf("ListEvents(after 1, limit 2) = %+v, %v", evs, err)
	}
}

// testNodeDeleteIf: a conditional delete removes the node only while its
// serials are the ones read.
func testNodeDeleteIf(t *testing.T, ds datastore.DataStore) {
	const id = "spiffe://td/spire/agent/x/2"
	n := &datastore.AttestedNode{SPIFFEID: id, AttestationType: "x", CertSerial: "1", CertNotAfter: 10, Selectors: sel("a", "1")}
	if err := ds.CreateAttestedNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	read := n.Serials()
	// Another server re-attests the node meanwhile: new serial.
	re := *n
	re.CertSerial, re.CertNotAfter = "9", 99
	if err := ds.UpdateAttestedNode(ctx, &re, read); err != nil {
		t.Fatal(err)
	}
	_, err := ds.DeleteAttestedNodeIf(ctx, id, read)
	wantConflict(t, err, "delete of a re-attested node")
	wantNode(t, ds, id, re.Serials(), 0, "a", "1")
	_, last := eventKeys(t, ds, datastore.NodeEvents, 0)

	got, err := ds.DeleteAttestedNodeIf(ctx, id, re.Serials())
	if err != nil {
		t.Fatal(err)
	}
	if got.CertSerial != "9" || got.CertNotAfter != 99 || !selEqual(got.Selectors, sel("a", "1")) {
		t.Fatalf("deleted node %+v", got)
	}
	wantErr(t, func() error { _, err := ds.FetchAttestedNode(ctx, id); return err }(), datastore.ErrNotFound)
	if sels, err := ds.GetNodeSelectors(ctx, id); err != nil || len(sels) != 0 {
		t.Fatalf("selectors after delete: %v, %v", sels, err)
	}
	keys, _ := eventKeys(t, ds, datastore.NodeEvents, last)
	wantKeys(t, keys, id)
	_, err = ds.DeleteAttestedNodeIf(ctx, id, re.Serials())
	if !errors.Is(err, datastore.ErrNotFound) || errors.Is(err, datastore.ErrConflict) {
		t.Fatalf("delete of an absent node: %v, want ErrNotFound alone", err)
	}
}

// testEventPrune: pruning deletes events older than the cut, keeps the
// newest of each table, and a second call (another server) finds
// nothing; event IDs keep growing afterwards.
func testEventPrune(t *testing.T, ds datastore.DataStore) {
	for i := range 3 {
		mustCreate(t, ds, testEntry{spiffe: "/e" + itoa(i), parent: "/p", sels: []string{"a", itoa(i)}}.entry())
		if err := ds.SetNodeSelectors(ctx, "spiffe://td/n"+itoa(i), sel("a", "1")); err != nil {
			t.Fatal(err)
		}
	}
	lastEntry, _ := ds.LastEventID(ctx, datastore.EntryEvents)
	lastNode, _ := ds.LastEventID(ctx, datastore.NodeEvents)
	// Nothing is older than an hour ago.
	if n, err := ds.PruneEvents(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("PruneEvents(an hour ago) = %d, %v; want 0", n, err)
	}
	n, err := ds.PruneEvents(ctx, time.Now().Add(time.Hour))
	if err != nil || n != 4 {
		t.Fatalf("PruneEvents(in an hour) = %d, %v; want 4 (all but the newest of each table)", n, err)
	}
	if n, err := ds.PruneEvents(ctx, time.Now().Add(time.Hour)); err != nil || n != 0 {
		t.Fatalf("second PruneEvents = %d, %v; want 0", n, err)
	}
	for kind, last := range map[datastore.EventKind]int64{datastore.EntryEvents: lastEntry, datastore.NodeEvents: lastNode} {
		evs, err := ds.ListEvents(ctx, kind, 0, 0, datastore.RequireCurrent)
		if err != nil || len(evs) != 1 || evs[0].ID != last {
			t.Fatalf("%v after prune: %+v, %v; want only ID %d", kind, evs, err, last)
		}
	}
	mustCreate(t, ds, testEntry{spiffe: "/after", parent: "/p", sels: []string{"a", "x"}}.entry())
	if got, _ := ds.LastEventID(ctx, datastore.EntryEvents); got <= lastEntry {
		t.Fatalf("event ID after prune %d, want > %d", got, lastEntry)
	}
}

// testEntryPruneConcurrent: servers sharing a database prune at the same
// moment; every expired entry is pruned by exactly one of them and
// neither fails.
func testEntryPruneConcurrent(t *testing.T, ds datastore.DataStore) {
	const n = 30
	for i := range n {
		mustCreate(t, ds, testEntry{spiffe: "/x" + itoa(i), parent: "/p", sels: []string{"a", itoa(i)}, expiresAt: time.Now().Unix() - 10}.entry())
	}
	const pruners = 4
	results := make(chan []string, pruners)
	errs := make(chan error, pruners)
	start := make(chan struct{})
	for range pruners {
		go func() {
			<-start
			out, err := ds.PruneEntries(ctx, time.Now())
			var ids []string
			for _, e := range out {
				ids = append(ids, e.Id)
			}
			results <- ids
			errs <- err
		}()
	}
	close(start)
	seen := map[string]int{}
	for range pruners {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent prune: %v", err)
		}
		for _, id := range <-results {
			seen[id]++
		}
	}
	if len(seen) != n {
		t.Fatalf("%d entries pruned, want %d", len(seen), n)
	}
	for id, k := range seen {
		if k != 1 {
			t.Fatalf("entry %s pruned by %d pruners", id, k)
		}
	}
	keys, _ := eventKeys(t, ds, datastore.EntryEvents, 0)
	if len(keys) != 2*n {
		t.Fatalf("%d entry events, want %d (a creation and a deletion each)", len(keys), 2*n)
	}
}

// TestPruneEntriesInBatches: a prune of more expired entries than one
// transaction takes deletes them all, each once, in transactions of at
// most pruneBatch (each moves the revision once), and leaves the others.
// Not part of the parallel conformance suite: it sets pruneBatch.
func TestPruneEntriesInBatches(t *testing.T) {
	defer func(n int) { pruneBatch = n }(pruneBatch)
	pruneBatch = 7
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) {
			ds := openStore(t, eng.cfg(t))
			const expired = 30 // four full batches and a part
			for i := range expired {
				mustCreate(t, ds, testEntry{spiffe: "/x" + itoa(i), parent: "/p", sels: []string{"a", itoa(i)}, expiresAt: time.Now().Unix() - 10}.entry())
			}
			kept := mustCreate(t, ds, testEntry{spiffe: "/kept", parent: "/p", sels: []string{"b", "1"}}.entry())
			r0, err := ds.EntriesRevision(ctx)
			if err != nil {
				t.Fatal(err)
			}
			out, err := ds.PruneEntries(ctx, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, e := range out {
				if seen[e.Id] {
					t.Fatalf("entry %s returned twice", e.Id)
				}
				seen[e.Id] = true
			}
			if len(seen) != expired {
				t.Fatalf("%d entries pruned, want %d", len(seen), expired)
			}
			if _, err := ds.FetchEntry(ctx, kept.Id); err != nil {
				t.Fatalf("unexpired entry: %v", err)
			}
			r1, err := ds.EntriesRevision(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if want := int64((expired + pruneBatch - 1) / pruneBatch); r1-r0 != want {
				t.Fatalf("revision moved by %d, want %d (one per transaction)", r1-r0, want)
			}
		})
	}
}

// TestPruneEventsInBatches: more old events than one transaction takes
// are all pruned but the newest of the table.
func TestPruneEventsInBatches(t *testing.T) {
	defer func(n int) { pruneEventsBatch = n }(pruneEventsBatch)
	pruneEventsBatch = 4
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) {
			ds := openStore(t, eng.cfg(t))
			const n = 11 // two full batches and a part, plus the newest
			for i := range n + 1 {
				mustCreate(t, ds, testEntry{spiffe: "/e" + itoa(i), parent: "/p", sels: []string{"a", itoa(i)}}.entry())
			}
			last, err := ds.LastEventID(ctx, datastore.EntryEvents)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ds.PruneEvents(ctx, time.Now().Add(time.Hour))
			if err != nil || got != n {
				t.Fatalf("PruneEvents = %d, %v; want %d", got, err, n)
			}
			evs, err := ds.ListEvents(ctx, datastore.EntryEvents, 0, 0, datastore.RequireCurrent)
			if err != nil || len(evs) != 1 || evs[0].ID != last {
				t.Fatalf("after prune: %+v, %v; want only ID %d", evs, err, last)
			}
		})
	}
}
