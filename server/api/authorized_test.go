package api

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// slowList is the real SQLite store whose ListEntries waits for a signal,
// to hold a reload open.
type slowList struct {
	datastore.DataStore
	release chan struct{}
	started chan struct{}
}

func (s *slowList) ListEntries(ctx context.Context, req *datastore.ListEntriesRequest) ([]*types.Entry, string, error) {
	select {
	case s.started <- struct{}{}:
	default:
	}
	<-s.release
	return s.DataStore.ListEntries(ctx, req)
}

// TestEntryCacheServesPreviousSnapshotDuringReload: while one request
// reloads the entry cache, others get the previous snapshot at once instead
// of queueing behind the reload; the next request after it sees the change.
func TestEntryCacheServesPreviousSnapshotDuringReload(t *testing.T) {
	ctx := context.Background()
	st := sqlitetest.Open(t)
	if _, err := st.CreateEntry(ctx, workloadEntry("/first")); err != nil {
		t.Fatal(err)
	}
	slow := &slowList{DataStore: st, release: make(chan struct{}), started: make(chan struct{}, 1)}
	c := newEntryCache(slow, nil)

	close(slow.release) // the first load goes through
	first, err := c.snapshot(ctx)
	if err != nil || first.len() != 1 {
		t.Fatalf("first snapshot: %v, %v", first, err)
	}
	// Fresh channels: the first load already signalled started.
	slow.release, slow.started = make(chan struct{}), make(chan struct{}, 1)
	if _, err := st.CreateEntry(ctx, workloadEntry("/second")); err != nil {
		t.Fatal(err)
	}
	c.invalidate() // as the API does after its writes

	reloaded := make(chan *entrySnapshot, 1)
	go func() {
		s, err := c.snapshot(ctx)
		if err != nil {
			t.Error(err)
		}
		reloaded <- s
	}()
	<-slow.started // the reload is now blocked inside ListEntries

	got := make(chan *entrySnapshot, 1)
	go func() { s, _ := c.snapshot(ctx); got <- s }()
	select {
	case s := <-got:
		if s != first {
			t.Fatal("a request during a reload was not served the previous snapshot")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a request queued behind the reload")
	}
	close(slow.release)
	if s := <-reloaded; s.len() != 2 {
		t.Fatalf("reload saw %d entries, want 2", s.len())
	}
	after, err := c.snapshot(ctx)
	if err != nil || after.len() != 2 {
		t.Fatalf("after the reload: %d entries, %v", after.len(), err)
	}
}

// sleepyList is the real store whose ListEntries takes a while, as with
// hundreds of thousands of entries, and counts its calls.
type sleepyList struct {
	datastore.DataStore
	cost  time.Duration
	loads int
}

func (s *sleepyList) ListEntries(ctx context.Context, req *datastore.ListEntriesRequest) ([]*types.Entry, string, error) {
	s.loads++
	time.Sleep(s.cost)
	return s.DataStore.ListEntries(ctx, req)
}

// TestEntryCachePacesCostlyReloads: after a reload that took longer than
// paceAbove, the next one waits paceFactor times as long, so that a stream
// of changes cannot keep the server reloading; the waiting request still
// gets the change.
func TestEntryCachePacesCostlyReloads(t *testing.T) {
	ctx := context.Background()
	st := sqlitetest.Open(t)
	slow := &sleepyList{DataStore: st, cost: 2 * paceAbove}
	c := newEntryCache(slow, nil)
	if _, err := c.snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateEntry(ctx, workloadEntry("/changed")); err != nil {
		t.Fatal(err)
	}
	c.invalidate()
	start := time.Now()
	s, err := c.snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.len() != 1 {
		t.Fatalf("the paced reload missed the change: %d entries", s.len())
	}
	if waited, least := time.Since(start), paceFactor*slow.cost; waited < least {
		t.Fatalf("a reload after one of %v started after %v, want at least %v", slow.cost, waited, least)
	}
	if slow.loads != 2 {
		t.Fatalf("%d loads, want 2", slow.loads)
	}

	// Cheap reloads are not paced: the next request sees a change at once.
	slow.cost = 0
	c = newEntryCache(slow, nil)
	if _, err := c.snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateEntry(ctx, workloadEntry("/again")); err != nil {
		t.Fatal(err)
	}
	c.invalidate()
	if s, err := c.snapshot(ctx); err != nil || s.len() != 2 {
		t.Fatalf("cheap reload: %v entries, %v", s.len(), err)
	}
}

// TestEntryCacheSeesOtherServersWrites: an entry written by another server
// sharing the database (no invalidate here) is seen once revCheckEvery has
// passed, without any request in between asking for it.
func TestEntryCacheSeesOtherServersWrites(t *testing.T) {
	ctx := context.Background()
	st := sqlitetest.Open(t)
	revs := &revisionCounter{DataStore: st}
	c := newEntryCache(revs, nil)
	if s, err := c.snapshot(ctx); err != nil || s.len() != 0 {
		t.Fatalf("empty store: %v, %v", s, err)
	}
	// Within revCheckEvery requests cost no query.
	for range 10 {
		if _, err := c.snapshot(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := revs.n.Load(); n != 1 {
		t.Fatalf("11 requests read the revision %d times, want 1", n)
	}
	if _, err := st.CreateEntry(ctx, workloadEntry("/remote")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(revCheckEvery)
	if s, err := c.snapshot(ctx); err != nil || s.len() != 1 {
		t.Fatalf("after %v: %d entries, %v", revCheckEvery, s.len(), err)
	}
}

// revisionCounter counts revision reads.
type revisionCounter struct {
	datastore.DataStore
	n atomic.Int64
}

func (r *revisionCounter) EntriesRevision(ctx context.Context) (int64, error) {
	r.n.Add(1)
	return r.DataStore.EntriesRevision(ctx)
}

// TestAuthorizedForRemembersPerAgent: an agent's second sync is answered
// from the snapshot's memo, but a change of the node's selectors (which
// decide its node aliases) or of the server ID is never answered from it,
// nor is one agent's answer given to another.
func TestAuthorizedForRemembersPerAgent(t *testing.T) {
	const (
		td       = "example.org"
		serverID = "spiffe://example.org/spire/server"
		agentA   = "spiffe://example.org/spire/agent/a"
		agentB   = "spiffe://example.org/spire/agent/b"
	)
	id := func(path string) *types.SPIFFEID { return &types.SPIFFEID{TrustDomain: td, Path: path} }
	entry := func(eid, parent, spiffeID string, sels ...*types.Selector) *types.Entry {
		return &types.Entry{Id: eid, ParentId: id(parent), SpiffeId: id(spiffeID), Selectors: sels}
	}
	rack := &types.Selector{Type: "tpm", Value: "model:rack"}
	s := newSnapshot([]*types.Entry{
		entry("a1", "/spire/agent/a", "/w/a1"),
		entry("b1", "/spire/agent/b", "/w/b1"),
		entry("alias", "/spire/server", "/rack", rack),
		entry("r1", "/rack", "/w/r1"),
	})
	ids := func(es []int32) []string {
		var out []string
		for _, i := range es {
			out = append(out, s.id(i))
		}
		return out
	}
	check := func(name, agent, srv string, sels []*types.Selector, want ...string) []int32 {
		t.Helper()
		got := s.authorizedFor(agent, srv, sels)
		if g := ids(got); !slices.Equal(g, want) {
			t.Errorf("%s: %v, want %v", name, g, want)
		}
		return got
	}
	first := check("first sync", agentA, serverID, nil, "a1")
	again := check("second sync", agentA, serverID, nil, "a1")
	if &first[0] != &again[0] {
		t.Error("second sync walked the entries again instead of using the memo")
	}
	check("other agent", agentB, serverID, nil, "b1")
	// The same slice reused by the node cache, with a new value: the
	// memo compares values, not slices.
	sels := []*types.Selector{{Type: "tpm", Value: "model:desk"}}
	check("selectors matching no alias", agentA, serverID, sels, "a1")
	sels[0] = rack
	check("selectors now matching the alias", agentA, serverID, sels, "alias", "a1", "r1")
	check("selectors dropped", agentA, serverID, nil, "a1")
	check("other server ID", agentA, "spiffe://example.org/other", []*types.Selector{rack}, "a1")
}
