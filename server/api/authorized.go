package api

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/telemetry"
)

// entryCache keeps every entry in memory, indexed by parent and by SPIFFE ID,
// so that working out an agent's authorized entries is a graph walk rather
// than a query per level. It reloads when the datastore's entries revision
// moves, which one cheap query per request tells.
//
// One request reloads at a time, outside the lock; requests that arrive
// meanwhile are served the previous snapshot instead of queueing behind the
// reload. With thousands of entries a reload takes long enough that, under
// a stream of entry changes, queueing every agent behind it stalled syncs
// (the fleet benchmark's p99). The staleness is bounded by one reload and
// its pacing (below, at most maxPace): an entry deleted a moment ago may
// still authorize an SVID for that long, as SPIRE's periodically rebuilt
// entry cache allows for its reload interval (5 s by default).
//
// Reloads are also paced: after a reload that took longer than
// paceAbove, the next one starts no sooner than paceFactor times its
// duration after it ended, so that a stream of changes (a fleet rolling
// out, entries created in batches) costs at most a fixed share of the CPU
// instead of back-to-back reloads. Below paceAbove a change is visible to
// the very next request, as before.
type entryCache struct {
	ds datastore.DataStore
	// metrics gets SPIRE's entry.cache.reload call for every reload (a
	// nil one drops it).
	metrics *telemetry.Metrics
	// log gets the entries a snapshot left out (nil drops them).
	log *slog.Logger
	// changed, when set, is told of every invalidation (the notice
	// stream's feed); it must not block.
	changed func()

	mu sync.Mutex
	// checked is when the revision was last read: within revCheckEvery
	// the snapshot is served without asking. Entry writes made through
	// this server reset it (invalidate), so they show at once; a write by
	// another server sharing the database shows within revCheckEvery.
	checked time.Time
	// invals counts invalidations, so that a check that read the
	// revision before one does not mark the cache as checked after it.
	invals   uint64
	rev      int64
	snap     *entrySnapshot
	loading  chan struct{} // non-nil while a reload runs; closed when it ends
	lastEnd  time.Time     // when the last reload ended
	lastCost time.Duration // how long it took

	// follow, when set, is the events poller's Sync (FollowEvents): the
	// snapshot is then changed only by the poller, through install and
	// apply, and never checked against the revision. A write of this
	// server (invalidate) makes the next request sync first, so that it
	// sees the write; synced is the invals count the last sync covered.
	follow func(ctx context.Context) error
	synced uint64
	// syncing is non-nil while a request's sync runs, closed when it
	// ends.
	syncing chan struct{}
}

const (
	revCheckEvery = time.Second
	paceAbove     = 20 * time.Millisecond
	paceFactor    = 4
	// maxPace bounds the wait, as SPIRE's default cache_reload_interval.
	maxPace = 5 * time.Second
)

// reloadWait is how long the next reload must wait. Call with mu held.
func (c *entryCache) reloadWait(now time.Time) time.Duration {
	if c.snap == nil || c.lastCost <= paceAbove {
		return 0
	}
	return min(maxPace, c.lastEnd.Add(paceFactor*c.lastCost).Sub(now))
}

// authorizedMemo is one agent's authorized entries (indexes into its
// snapshot) and what they were worked out from.
type authorizedMemo struct {
	serverID  string
	selectors []selectorKey
	entries   []int32
	// sorted is entries in index order, for contains, when there are
	// too many to scan.
	sorted []int32
	// digest names the entries and their revisions, so that the notice
	// stream can tell whether an agent's entries moved (pushDigest).
	digest uint64
}

// memoScanMax is how many entries contains scans rather than searches.
const memoScanMax = 32

// contains tells whether entry i is among the memo's.
func (m *authorizedMemo) contains(i int32) bool {
	if m.sorted == nil {
		return slices.Contains(m.entries, i)
	}
	_, ok := slices.BinarySearch(m.sorted, i)
	return ok
}

type selectorKey struct{ typ, value string }

func selectorKeys(sels []*types.Selector) []selectorKey {
	keys := make([]selectorKey, len(sels))
	for i, s := range sels {
		keys[i] = selectorKey{s.Type, s.Value}
	}
	return keys
}

func (m *authorizedMemo) matches(serverID string, sels []*types.Selector) bool {
	if m.serverID != serverID || len(m.selectors) != len(sels) {
		return false
	}
	for i, s := range sels {
		if m.selectors[i] != (selectorKey{s.Type, s.Value}) {
			return false
		}
	}
	return true
}

func newEntryCache(ds datastore.DataStore, m *telemetry.Metrics) *entryCache {
	return &entryCache{ds: ds, metrics: m}
}

// invalidate makes the next request read the revision.
func (c *entryCache) invalidate() {
	c.mu.Lock()
	c.checked = time.Time{}
	c.invals++
	c.mu.Unlock()
	if c.changed != nil {
		c.changed()
	}
}

func (c *entryCache) snapshot(ctx context.Context) (*entrySnapshot, error) {
	if c.follow != nil {
		return c.followedSnapshot(ctx)
	}
	c.mu.Lock()
	if s := c.snap; s != nil && time.Since(c.checked) < revCheckEvery {
		c.mu.Unlock()
		return s, nil
	}
	invals := c.invals
	c.mu.Unlock()
	rev, err := c.ds.EntriesRevision(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	// Checked only if the snapshot is of this revision and no write of
	// this server came between reading it and now.
	if invals == c.invals && c.snap != nil && rev == c.rev {
		c.checked = time.Now()
	}
	c.mu.Unlock()
	for {
		c.mu.Lock()
		switch {
		case c.snap != nil && rev == c.rev:
			s := c.snap
			c.mu.Unlock()
			return s, nil
		case c.loading != nil && c.snap != nil:
			s := c.snap
			c.mu.Unlock()
			return s, nil
		case c.loading != nil:
			// The very first load: nothing to serve yet, so wait for it.
			wait := c.loading
			c.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		done := make(chan struct{})
		c.loading = done
		wait := c.reloadWait(time.Now())
		c.mu.Unlock()

		var s *entrySnapshot
		if wait > 0 {
			// Meanwhile others get the previous snapshot; the revision
			// is read again so that it names what the load will see.
			t := time.NewTimer(wait)
			select {
			case <-t.C:
				rev, err = c.ds.EntriesRevision(ctx)
			case <-ctx.Done():
				t.Stop()
				err = ctx.Err()
			}
		}
		start := time.Now()
		if err == nil {
			s, err = c.load(ctx)
		}
		c.mu.Lock()
		c.loading = nil
		close(done)
		installed := false
		if err == nil && (c.snap == nil || rev >= c.rev) {
			c.snap, c.rev = s, rev
			c.lastEnd, c.lastCost = time.Now(), time.Since(start)
			if invals == c.invals {
				c.checked = c.lastEnd
			}
			installed = true
		}
		c.mu.Unlock()
		// Whoever loaded it, the notice feed hears of a new snapshot.
		if installed && c.changed != nil {
			c.changed()
		}
		return s, err
	}
}

// followedSnapshot is snapshot when the events poller keeps the cache. A
// write made through this server is applied before the next request is
// served; one made elsewhere, at the poller's next interval. Requests
// that need a sync share one: those that arrive while a sync runs wait for
// it, and start the next if it began before their server's last write.
// When the sync
// fails (the database is away) the snapshot held is served, and the
// poller's next interval tries again: agents keep their SVIDs meanwhile.
func (c *entryCache) followedSnapshot(ctx context.Context) (*entrySnapshot, error) {
	for {
		c.mu.Lock()
		s, invals := c.snap, c.invals
		if s != nil && c.synced >= invals {
			c.mu.Unlock()
			return s, nil
		}
		if c.syncing != nil {
			// A sync that started before this server's last write cannot
			// bring it in: wait for it, then start one that does (serving
			// the snapshot held would hand out an entry just deleted
			// here).
			wait := c.syncing
			c.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				if s != nil {
					return s, nil
				}
				return nil, ctx.Err()
			}
		}
		done := make(chan struct{})
		c.syncing = done
		c.mu.Unlock()

		err := c.follow(ctx)
		c.mu.Lock()
		c.syncing = nil
		close(done)
		// Failed or not, this write is now the poller's to bring in, so
		// that requests do not each retry a database that is away.
		c.synced = max(c.synced, invals)
		s = c.snap
		c.mu.Unlock()
		if s == nil {
			if err == nil {
				err = errors.New("entry cache not loaded")
			}
			return nil, err
		}
		return s, nil
	}
}

// install replaces the snapshot (the poller's full reload).
func (c *entryCache) install(s *entrySnapshot) {
	c.mu.Lock()
	c.snap = s
	c.mu.Unlock()
	if c.changed != nil {
		c.changed()
	}
}

// reload reads every entry and installs them (the poller's full reload).
func (c *entryCache) reload(ctx context.Context) error {
	s, err := c.load(ctx)
	if err != nil {
		return err
	}
	c.install(s)
	return nil
}

// Past maxPatchIDs changed entries, and a 1/maxPatchShare of all of them,
// a full reload reads them faster than their IDs do.
const (
	maxPatchIDs   = 1000
	maxPatchShare = 4
)

// apply reads the entries with these IDs again and installs a snapshot
// with them in place of what it had (the poller's incremental update).
func (c *entryCache) apply(ctx context.Context, ids []string) error {
	c.mu.Lock()
	old := c.snap
	c.mu.Unlock()
	if old == nil || len(ids) > maxPatchIDs && len(ids) > old.len()/maxPatchShare {
		return c.reload(ctx)
	}
	entries, err := c.ds.FetchEntries(ctx, ids)
	if err != nil {
		return err
	}
	changes := make(map[string]*types.Entry, len(ids))
	for _, id := range ids {
		changes[id] = nil
	}
	for _, e := range entries {
		changes[e.Id] = e
	}
	c.install(c.logUnencodable(old.patched(changes)))
	return nil
}

// logUnencodable logs the entries s left out, and returns s.
func (c *entryCache) logUnencodable(s *entrySnapshot) *entrySnapshot {
	for _, u := range s.unencodable {
		if c.log != nil {
			c.log.Error("Registration entry left out of the entry cache: it does not encode", "entry_id", u.id, "error", u.err)
		}
	}
	s.unencodable = nil
	return s
}

// load reads every entry into a new snapshot; SPIRE counts its full cache
// rebuild, the counterpart of this, as entry.cache.reload.
func (c *entryCache) load(ctx context.Context) (_ *entrySnapshot, err error) {
	call := c.metrics.StartCall("entry", "cache", "reload")
	defer call.Done(&err)
	entries, _, err := c.ds.ListEntries(ctx, &datastore.ListEntriesRequest{})
	if err != nil {
		return nil, err
	}
	return c.logUnencodable(newSnapshot(entries)), nil
}

// authorizedFor returns the entries an agent may obtain SVIDs for, as
// indexes into s: those parented to the agent, the node-alias entries
// (parented to the server) whose selectors the node's selectors satisfy,
// and, transitively, every entry parented to one of those. The slice is
// shared with later calls: callers must not modify it.
func (s *entrySnapshot) authorizedFor(agentID, serverID string, nodeSelectors []*types.Selector) []int32 {
	return s.authorizedMemoFor(agentID, serverID, nodeSelectors).entries
}

// authorizedMemoFor is authorizedFor with the answer's digest.
func (s *entrySnapshot) authorizedMemoFor(agentID, serverID string, nodeSelectors []*types.Selector) *authorizedMemo {
	if m, ok := s.authorized.Load(agentID); ok && m.(*authorizedMemo).matches(serverID, nodeSelectors) {
		return m.(*authorizedMemo)
	}
	out := s.walkAuthorized(agentID, serverID, nodeSelectors)
	m := &authorizedMemo{serverID: serverID, selectors: selectorKeys(nodeSelectors), entries: slices.Clip(out), digest: s.pushDigest(out)}
	if len(out) > memoScanMax {
		m.sorted = slices.Sorted(slices.Values(out))
	}
	s.authorized.Store(agentID, m)
	return m
}

// syncedEntries is authorizedEntries for the entry sync RPCs: what they
// serve is what the agent now holds, which its notice stream compares
// with later changes.
func (a *API) syncedEntries(ctx context.Context, c *Caller) (*entrySnapshot, *authorizedMemo, error) {
	snap, m, err := a.authorizedEntries(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	a.notices.servedEntries(c.ID.String(), m.digest)
	return snap, m, nil
}

// authorizedEntries returns the calling agent's authorized entries, as
// indexes into the snapshot returned with them.
func (a *API) authorizedEntries(ctx context.Context, c *Caller) (*entrySnapshot, *authorizedMemo, error) {
	snap, err := a.entries.snapshot(ctx)
	if err != nil {
		return nil, nil, err
	}
	// The node authenticated for this call carries its selectors (nil
	// when it has none, as a join-token node).
	var selectors []*types.Selector
	if c.Node != nil {
		selectors = c.Node.Selectors
	} else if selectors, err = a.cfg.DataStore.GetNodeSelectors(ctx, c.ID.String()); err != nil {
		return nil, nil, err
	}
	return snap, snap.authorizedMemoFor(c.ID.String(), a.serverID().String(), selectors), nil
}
