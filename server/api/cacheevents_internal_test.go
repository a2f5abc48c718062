package api

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe-hw/spire-hw/server/events"
)

// sameSnapshot fails unless a and b index the same entries the same way.
func sameSnapshot(t *testing.T, a, b *entrySnapshot) {
	t.Helper()
	va, vb := viewOf(a), viewOf(b)
	for _, idx := range []struct {
		name string
		a, b map[string][]string
	}{{"byParent", va.byParent, vb.byParent}, {"bySPIFFEID", va.bySPIFFEID, vb.bySPIFFEID}} {
		if len(idx.a) != len(idx.b) {
			t.Fatalf("%s: %d keys, want %d", idx.name, len(idx.a), len(idx.b))
		}
		for k, want := range idx.b {
			if got := idx.a[k]; !slices.Equal(got, want) {
				t.Fatalf("%s[%s]: %v, want %v", idx.name, k, got, want)
			}
		}
	}
	if a.len() != b.len() {
		t.Fatalf("byID: %d entries, want %d", a.len(), b.len())
	}
	for id, e := range vb.byID {
		if !proto.Equal(va.byID[id], e) {
			t.Fatalf("byID[%s] = %v, want %v", id, va.byID[id], e)
		}
	}
}

// TestEntryCachePatched: a snapshot patched with the entries that changed
// equals one loaded from scratch, through creations, moves between
// parents and SPIFFE IDs, and deletions.
func TestEntryCachePatched(t *testing.T) {
	ctx := context.Background()
	ds := sqlitetest.Open(t)
	c := newEntryCache(ds, nil)
	if err := c.reload(ctx); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var ids []string
	for round := range 30 {
		var changed []string
		for range 1 + rng.IntN(8) {
			switch op := rng.IntN(3); {
			case op == 0 || len(ids) == 0:
				e, err := ds.CreateEntry(ctx, &types.Entry{
					SpiffeId:  &types.SPIFFEID{TrustDomain: "example.org", Path: fmt.Sprintf("/w%d", rng.IntN(5))},
					ParentId:  &types.SPIFFEID{TrustDomain: "example.org", Path: fmt.Sprintf("/p%d", rng.IntN(3))},
					Selectors: []*types.Selector{{Type: "u", Value: fmt.Sprint(round, rng.Int())}}})
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, e.Id)
				changed = append(changed, e.Id)
			case op == 1:
				id := ids[rng.IntN(len(ids))]
				_, err := ds.UpdateEntry(ctx, &types.Entry{Id: id,
					SpiffeId: &types.SPIFFEID{TrustDomain: "example.org", Path: fmt.Sprintf("/w%d", rng.IntN(5))},
					ParentId: &types.SPIFFEID{TrustDomain: "example.org", Path: fmt.Sprintf("/p%d", rng.IntN(3))}},
					&types.EntryMask{SpiffeId: true, ParentId: true})
				if err != nil {
					t.Fatal(err)
				}
				changed = append(changed, id)
			default:
				i := rng.IntN(len(ids))
				if _, err := ds.DeleteEntry(ctx, ids[i]); err != nil {
					t.Fatal(err)
				}
				changed = append(changed, ids[i])
				ids = slices.Delete(ids, i, i+1)
			}
		}
		if err := c.apply(ctx, changed); err != nil {
			t.Fatal(err)
		}
		want, err := c.load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sameSnapshot(t, c.snap, want)
	}
}

// TestFollowEvents: two servers' APIs on one database, each following the
// events: a write through one is served by it at once and by the other
// after its next poll, entries and node bans alike, and a poll that finds
// nothing leaves the snapshot as it was.
func TestFollowEvents(t *testing.T) {
	ctx := context.Background()
	ds := sqlitetest.Open(t)
	newAPI := func() (*API, *events.Poller) {
		a := New(Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), DataStore: ds})
		p := events.New(events.Config{DataStore: ds, Sink: a})
		a.FollowEvents(p.Sync, p.Interval())
		if err := p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return a, p
	}
	a, _ := newAPI()
	b, pb := newAPI()

	// Through a: its own write is in its next snapshot.
	e, err := ds.CreateEntry(ctx, workloadEntry("/w"))
	if err != nil {
		t.Fatal(err)
	}
	a.entries.invalidate()
	snapA, err := a.entries.snapshot(ctx)
	if err != nil || !hasEntry(snapA, e.Id) {
		t.Fatalf("a's snapshot after its write: %v", err)
	}
	// b has not polled: it serves what it had, without asking.
	snapB, _ := b.entries.snapshot(ctx)
	if hasEntry(snapB, e.Id) {
		t.Fatal("b has the entry before polling")
	}
	if err := pb.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	snapB2, _ := b.entries.snapshot(ctx)
	if !hasEntry(snapB2, e.Id) {
		t.Fatal("b lacks the entry after polling")
	}
	if err := pb.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if s, _ := b.entries.snapshot(ctx); s != snapB2 {
		t.Fatal("an empty poll replaced b's snapshot")
	}

	// b caches a node; a bans it; b's next poll drops it from the cache.
	const id = "spiffe://example.org/spire/agent/x/1"
	if err := ds.CreateAttestedNode(ctx, &datastore.AttestedNode{SPIFFEID: id, AttestationType: "x", CertSerial: "1"}); err != nil {
		t.Fatal(err)
	}
	if n, err := b.nodes.fetch(ctx, id, false); err != nil || n.Banned() {
		t.Fatalf("b's fetch: %+v, %v", n, err)
	}
	if err := ds.UpdateAttestedNode(ctx, &datastore.AttestedNode{SPIFFEID: id, AttestationType: "x"}, datastore.NodeSerials{CertSerial: "1"}); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.nodes.fetch(ctx, id, false); n.Banned() {
		t.Fatal("b's node cache saw the ban before polling (the check cannot tell)")
	}
	if err := pb.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := b.nodes.fetch(ctx, id, false); err != nil || !n.Banned() {
		t.Fatalf("b's fetch after polling: %+v, %v; want banned", n, err)
	}
}

// TestFollowedSnapshotShared: after a write through this server, many
// concurrent requests share the sync that brings it in instead of each
// running one, and all of them are served; with the database away, the
// snapshot held is served and the failed sync is not retried by every
// request.
func TestFollowedSnapshotShared(t *testing.T) {
	ctx := context.Background()
	ds := sqlitetest.Open(t)
	a := New(Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), DataStore: ds})
	p := events.New(events.Config{DataStore: ds, Sink: a})
	var mu sync.Mutex
	var syncs int
	var fail error
	a.FollowEvents(func(ctx context.Context) error {
		mu.Lock()
		syncs++
		err := fail
		mu.Unlock()
		if err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond) // long enough for the others to arrive
		return p.Sync(ctx)
	}, p.Interval())
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e, err := ds.CreateEntry(ctx, workloadEntry("/w"))
	if err != nil {
		t.Fatal(err)
	}
	a.entries.invalidate()
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := a.entries.snapshot(ctx)
			if err == nil && !hasEntry(s, e.Id) {
				err = fmt.Errorf("snapshot without the entry written before the request")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if syncs != 1 {
		t.Fatalf("%d syncs for 50 requests after one write, want 1", syncs)
	}

	// The database goes away: the next request after a write tries once,
	// then every request is served the snapshot held.
	mu.Lock()
	fail, syncs = errors.New("database away"), 0
	mu.Unlock()
	a.entries.invalidate()
	for range 10 {
		if s, err := a.entries.snapshot(ctx); err != nil || !hasEntry(s, e.Id) {
			t.Fatalf("snapshot with the database away: %v", err)
		}
	}
	if syncs != 1 {
		t.Fatalf("%d syncs with the database away, want 1", syncs)
	}
}

// TestCachesServeWithDatabaseAway: with the database gone (its store
// closed), a node copy past its ttl (by less than maxNodeStaleness) still
// authenticates its agent and the
// last bundle read is still served, so that agents keep syncing; a node
// never read is still an error, as is a fresh read.
func TestCachesServeWithDatabaseAway(t *testing.T) {
	ctx := context.Background()
	ds := sqlitetest.Open(t)
	const id = "spiffe://example.org/spire/agent/x/1"
	if err := ds.CreateAttestedNode(ctx, &datastore.AttestedNode{SPIFFEID: id, AttestationType: "x", CertSerial: "1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.CreateBundle(ctx, &types.Bundle{TrustDomain: "example.org", SequenceNumber: 7}); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	nodes := newNodeCache(ds, func() time.Time { return now }, time.Second)
	bundle := &bundleCache{ds: ds, td: "example.org", ttl: time.Millisecond}
	if _, err := nodes.fetch(ctx, id, false); err != nil {
		t.Fatal(err)
	}
	if _, err := bundle.get(ctx); err != nil {
		t.Fatal(err)
	}
	ds.Close()
	now = now.Add(time.Minute)
	time.Sleep(5 * time.Millisecond)
	if n, err := nodes.fetch(ctx, id, false); err != nil || n.CertSerial != "1" {
		t.Fatalf("node with the database away: %+v, %v", n, err)
	}
	// Not for ever: a ban another server wrote just before the outage
	// is in force maxNodeStaleness after the last read at the latest.
	now = now.Add(maxNodeStaleness)
	if _, err := nodes.fetch(ctx, id, false); err == nil {
		t.Fatal("a node read long before the database went away still authenticates")
	}
	if _, err := nodes.fetch(ctx, id, true); err == nil {
		t.Fatal("a fresh node read with the database away succeeded")
	}
	if _, err := nodes.fetch(ctx, "spiffe://example.org/spire/agent/x/other", false); err == nil {
		t.Fatal("an uncached node with the database away was served")
	}
	if b, err := bundle.get(ctx); err != nil || b.SequenceNumber != 7 {
		t.Fatalf("bundle with the database away: %v, %v", b, err)
	}
}

// TestFollowedSnapshotAfterWriteDuringSync: a write made through this
// server while a sync that began before it runs is in the snapshot the
// next request gets: that request waits for the running sync and then
// runs its own, instead of being served the snapshot without the write
// (an entry deleted here would have been handed out once more).
func TestFollowedSnapshotAfterWriteDuringSync(t *testing.T) {
	ctx := context.Background()
	ds := sqlitetest.Open(t)
	a := New(Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), DataStore: ds})
	p := events.New(events.Config{DataStore: ds, Sink: a})
	inSync, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	a.FollowEvents(func(ctx context.Context) error {
		first := false
		once.Do(func() { first = true })
		if first {
			close(inSync)
			<-release
		}
		return p.Sync(ctx)
	}, p.Interval())
	e, err := ds.CreateEntry(ctx, workloadEntry("/w"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil { // the snapshot holds the entry
		t.Fatal(err)
	}
	if _, err := ds.CreateEntry(ctx, workloadEntry("/other")); err != nil {
		t.Fatal(err)
	}
	a.entries.invalidate()
	first := make(chan error, 1)
	go func() {
		_, err := a.entries.snapshot(ctx)
		first <- err
	}()
	<-inSync
	// The entry is deleted through this server while that sync runs.
	if _, err := ds.DeleteEntry(ctx, e.Id); err != nil {
		t.Fatal(err)
	}
	a.entries.invalidate()
	second := make(chan *entrySnapshot, 1)
	go func() {
		s, err := a.entries.snapshot(ctx)
		if err != nil {
			t.Error(err)
		}
		second <- s
	}()
	time.Sleep(20 * time.Millisecond) // let the second request find the sync running
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if s := <-second; s == nil || hasEntry(s, e.Id) {
		t.Fatal("the request after the delete was served the entry deleted through this server")
	}
}
