package api

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore"
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
	st, err := sqlstore.Open(ctx, sqlstore.Config{DatabaseType: sqlstore.SQLite, ConnectionString: filepath.Join(t.TempDir(), "ds.sqlite3")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mk := func(path string) *types.Entry {
		return &types.Entry{SpiffeId: &types.SPIFFEID{TrustDomain: "example.org", Path: path}, ParentId: &types.SPIFFEID{TrustDomain: "example.org", Path: "/agent"}, Selectors: []*types.Selector{{Type: "unix", Value: "uid:1"}}}
	}
	if _, err := st.CreateEntry(ctx, mk("/first")); err != nil {
		t.Fatal(err)
	}
	slow := &slowList{DataStore: st, release: make(chan struct{}), started: make(chan struct{}, 1)}
	c := newEntryCache(slow)

	close(slow.release) // the first load goes through
	first, err := c.snapshot(ctx)
	if err != nil || len(first.byID) != 1 {
		t.Fatalf("first snapshot: %v, %v", first, err)
	}
	// Fresh channels: the first load already signalled started.
	slow.release, slow.started = make(chan struct{}), make(chan struct{}, 1)
	if _, err := st.CreateEntry(ctx, mk("/second")); err != nil {
		t.Fatal(err)
	}

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
	if s := <-reloaded; len(s.byID) != 2 {
		t.Fatalf("reload saw %d entries, want 2", len(s.byID))
	}
	after, err := c.snapshot(ctx)
	if err != nil || len(after.byID) != 2 {
		t.Fatalf("after the reload: %d entries, %v", len(after.byID), err)
	}
}
