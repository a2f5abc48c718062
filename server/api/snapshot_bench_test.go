package api

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
)

// The benchmarks' fleet: benchAgents agents with benchPerAgent entries
// each, as the fleet scenario registers them (one SPIFFE ID and two
// selectors an entry), in one datastore shared by the benchmarks.
const (
	benchAgents   = 2000
	benchPerAgent = 10
	benchServerID = "spiffe://example.org/spire/server"
)

func benchAgentID(i int) string {
	return fmt.Sprintf("spiffe://example.org/spire/agent/join_token/agent-%05d", i)
}

// benchStore is a datastore holding the benchmarks' fleet.
func benchStore(b *testing.B) datastore.DataStore {
	ds := sqlitetest.Open(b)
	var batch []*types.Entry
	for a := range benchAgents {
		for k := range benchPerAgent {
			batch = append(batch, &types.Entry{
				ParentId:    &types.SPIFFEID{TrustDomain: "example.org", Path: fmt.Sprintf("/spire/agent/join_token/agent-%05d", a)},
				SpiffeId:    &types.SPIFFEID{TrustDomain: "example.org", Path: fmt.Sprintf("/fleet/agent-%05d/w%d", a, k)},
				Selectors:   []*types.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", 1000+k)}, {Type: "unix", Value: "gid:1000"}},
				X509SvidTtl: 3600, JwtSvidTtl: 300,
			})
		}
		if len(batch) >= 500 || a == benchAgents-1 {
			if _, _, err := ds.CreateEntries(context.Background(), batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	return ds
}

func benchCache(b *testing.B, ds datastore.DataStore) *entryCache {
	c := newEntryCache(ds, nil)
	if err := c.reload(context.Background()); err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkEntrySnapshotLoad reads every entry into a snapshot, and
// reports what one snapshot keeps live per entry, in bytes and objects.
func BenchmarkEntrySnapshotLoad(b *testing.B) {
	c := benchCache(b, benchStore(b))
	ctx := context.Background()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s, err := c.load(ctx)
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(s)
	for b.Loop() {
		if _, err := c.load(ctx); err != nil {
			b.Fatal(err)
		}
	}
	n := float64(benchAgents * benchPerAgent)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "live-B/entry")
	b.ReportMetric((float64(after.Mallocs-after.Frees)-float64(before.Mallocs-before.Frees))/n, "live-objs/entry")
}

// BenchmarkAuthorizedWalk works out one agent's entries, as a sync after a
// snapshot change does (later syncs use the memo).
func BenchmarkAuthorizedWalk(b *testing.B) {
	c := benchCache(b, benchStore(b))
	i := 0
	for b.Loop() {
		_ = c.snap.walkAuthorized(benchAgentID(i%benchAgents), benchServerID, nil)
		i++
	}
}

// BenchmarkEntrySnapshotPatch applies one changed entry to the snapshot,
// as the events poller does.
func BenchmarkEntrySnapshotPatch(b *testing.B) {
	ds := benchStore(b)
	c := benchCache(b, ds)
	ctx := context.Background()
	entries, _, err := ds.ListEntries(ctx, &datastore.ListEntriesRequest{Pagination: &datastore.Pagination{Size: 1}})
	if err != nil || len(entries) == 0 {
		b.Fatal(err)
	}
	ids := []string{entries[0].Id}
	for b.Loop() {
		if err := c.apply(ctx, ids); err != nil {
			b.Fatal(err)
		}
	}
}
