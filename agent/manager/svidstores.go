package manager

import (
	"bytes"
	"context"
	"crypto/x509"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe-hw/spire-hw/agent/svidstore"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// storeRetryInterval is how soon a push that left work undone (a put or
// delete the store failed) runs again without a new sync: SPIRE's SVIDStore
// service runs every 5 s.
const storeRetryInterval = 5 * time.Second

// storedSVIDs tracks the entries marked store_svid, as SPIRE's store cache
// and SVIDStore service do: their SVIDs are never served to workloads, only
// pushed to the store their selectors name, again whenever the entry, the
// SVID or a bundle it carries changes, and deleted from the store when the
// entry goes away. Like SPIRE, it lives in memory: a restarted agent mints
// and pushes again.
//
// The sync loop records entries, SVIDs and bundles and calls schedule; run
// pushes on its own goroutine, because a store call may take as long as the
// plugin host's call bound (30 s) when a plugin hangs, and that must not
// delay the next sync and so the rotation of every workload's SVID. No store
// call is made with mu held, so the sync never waits for a store.
type storedSVIDs struct {
	stores map[string]svidstore.Store
	td     spiffeid.TrustDomain
	log    *slog.Logger
	// signal wakes run; its buffer of one collapses the signals of syncs
	// that end while a push is under way into one more push.
	signal chan struct{}

	// mu guards the fields below, which the sync changes and push reads
	// and updates.
	mu        sync.Mutex
	records   map[string]*storeRecord
	own       *spiffebundle.Bundle
	federated map[spiffeid.TrustDomain]*spiffebundle.Bundle
	// scheduled counts the calls to schedule; pushed is the count the
	// last completed push started from, and pushedCh is closed (and
	// replaced) when pushed moves, so that a caller can wait for the state
	// it recorded to reach the stores.
	scheduled, pushed uint64
	pushedCh          chan struct{}
}

type storeRecord struct {
	// entry is nil once the server no longer lists it: the SVID must then
	// be deleted from the store.
	entry *types.Entry
	svid  cache.Identity
	// put is what the store last accepted, nil if nothing yet. Only push
	// sets it.
	put *storePut
}

// storePut is what a PutX509SVID carried, to tell whether to push again.
type storePut struct {
	entry   *types.Entry
	leaf    []byte                          // DER
	bundles map[string]*spiffebundle.Bundle // by trust domain name
}

func newStoredSVIDs(stores map[string]svidstore.Store, td spiffeid.TrustDomain, log *slog.Logger) *storedSVIDs {
	return &storedSVIDs{
		stores:   stores,
		td:       td,
		log:      log,
		signal:   make(chan struct{}, 1),
		records:  map[string]*storeRecord{},
		pushedCh: make(chan struct{}),
	}
}

// splitStored separates the entries whose SVIDs go to a store.
func splitStored(entries []*types.Entry) (served, stored []*types.Entry) {
	for _, e := range entries {
		if e.GetStoreSvid() {
			stored = append(stored, e)
		} else {
			served = append(served, e)
		}
	}
	return served, stored
}

// entries returns the current store entries, for the sync's revision
// comparison.
func (s *storedSVIDs) entries() []*types.Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*types.Entry
	for _, r := range s.records {
		if r.entry != nil {
			out = append(out, r.entry)
		}
	}
	return out
}

// setEntries records the store entries the server lists now.
func (s *storedSVIDs) setEntries(entries []*types.Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		seen[e.Id] = true
		r, ok := s.records[e.Id]
		if !ok {
			r = &storeRecord{}
			s.records[e.Id] = r
		}
		if r.entry == nil || !proto.Equal(r.entry, e) {
			if name, _, err := svidstore.ParseSelectors(e.Selectors); err != nil {
				s.log.Error("Invalid store name in selectors", "entry_id", e.Id, "error", err)
			} else if s.stores[name] == nil {
				s.log.Error("SVIDStore not found; the entry's SVID is not minted", "entry_id", e.Id, "svidstore", name)
			}
		}
		r.entry = e
	}
	for id, r := range s.records {
		if seen[id] {
			continue
		}
		// Nothing in a store yet. A put under way for it is seen to when
		// it returns: push then records it, and deletes it next time.
		if r.put == nil {
			delete(s.records, id)
			continue
		}
		r.entry, r.svid = nil, cache.Identity{}
	}
}

// svids returns the current SVIDs by entry ID.
func (s *storedSVIDs) svids() map[string]cache.Identity {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]cache.Identity, len(s.records))
	for id, r := range s.records {
		if r.entry != nil && r.svid.SVID != nil {
			out[id] = r.svid
		}
	}
	return out
}

// storable returns the entries whose selectors name a configured store.
func (s *storedSVIDs) storable(entries []*types.Entry) []*types.Entry {
	var out []*types.Entry
	for _, e := range entries {
		if name, _, err := svidstore.ParseSelectors(e.Selectors); err == nil && s.stores[name] != nil {
			out = append(out, e)
		}
	}
	return out
}

// setSVIDs records newly minted SVIDs.
func (s *storedSVIDs) setSVIDs(issued map[string]cache.Identity) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, svid := range issued {
		if r, ok := s.records[id]; ok && r.entry != nil {
			r.svid = svid
		}
	}
}

// schedule records the bundles stored SVIDs carry and asks run for a
// push. It never blocks: a push under way is followed by one more, with
// the latest state.
func (s *storedSVIDs) schedule(own *spiffebundle.Bundle, federated map[spiffeid.TrustDomain]*spiffebundle.Bundle) {
	s.mu.Lock()
	s.own, s.federated = own, federated
	s.scheduled++
	s.mu.Unlock()
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// run pushes on every schedule, one push at a time, until ctx is done.
// After a push that left work undone it pushes again after
// storeRetryInterval even without a new sync.
func (s *storedSVIDs) run(ctx context.Context) {
	retry := time.NewTimer(storeRetryInterval)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.signal:
		case <-retry.C:
		}
		if s.push(ctx) {
			retry.Reset(storeRetryInterval)
		} else {
			retry.Stop()
		}
	}
}

// storeWork is one record's push, planned under mu and done without it.
type storeWork struct {
	id    string
	entry *types.Entry // nil: delete put.entry's SVID
	svid  cache.Identity
	// put is what the store held when the work was planned.
	put     *storePut
	bundles map[string]*spiffebundle.Bundle
}

// push brings every store up to date with the recorded state: deletes for
// removed entries, puts for changed ones. Failures are logged; push reports
// whether any work was left undone, for run to retry.
func (s *storedSVIDs) push(ctx context.Context) (failed bool) {
	s.mu.Lock()
	started := s.scheduled
	work := s.plan()
	s.mu.Unlock()
	for _, w := range work {
		if ctx.Err() != nil {
			// Shutting down: what is left is pushed by the next run.
			return true
		}
		log := s.log.With("entry_id", w.id)
		if w.entry == nil {
			if !s.delete(ctx, log, w.put.entry) {
				failed = true
				continue
			}
			s.mu.Lock()
			if r := s.records[w.id]; r != nil && r.put == w.put {
				if r.entry == nil {
					delete(s.records, w.id)
				} else {
					// Listed again meanwhile: it must be put afresh.
					r.put = nil
				}
			}
			s.mu.Unlock()
			continue
		}
		// Moved to other metadata or another store: remove the old copy
		// first, as SPIRE does (and, as SPIRE, go on if that fails).
		if w.put != nil && !selectorsEqual(w.put.entry.Selectors, w.entry.Selectors) {
			s.delete(ctx, log, w.put.entry)
		}
		if !s.putSVID(ctx, log, w.entry, w.svid, w.bundles) {
			failed = true
			continue
		}
		s.mu.Lock()
		// The store holds this SVID now, whatever the sync did meanwhile:
		// record it, even on an entry removed since (its record then has
		// no entry), so that the next push replaces or deletes it.
		r := s.records[w.id]
		if r == nil {
			r = &storeRecord{}
			s.records[w.id] = r
		}
		r.put = &storePut{entry: w.entry, leaf: w.svid.SVID.Leaf(), bundles: w.bundles}
		s.mu.Unlock()
	}
	s.mu.Lock()
	if started > s.pushed {
		s.pushed = started
		close(s.pushedCh)
		s.pushedCh = make(chan struct{})
	}
	s.mu.Unlock()
	return failed
}

// plan lists, sorted by entry ID, the records whose store is not up to
// date. s.mu must be held.
func (s *storedSVIDs) plan() []storeWork {
	var work []storeWork
	for id, r := range s.records {
		if r.entry == nil {
			if r.put == nil {
				delete(s.records, id) // nothing stored, nothing to delete
				continue
			}
			work = append(work, storeWork{id: id, put: r.put})
			continue
		}
		if r.svid.SVID == nil {
			continue
		}
		bundles := s.bundlesFor(r.entry, s.own, s.federated)
		if r.put != nil && proto.Equal(r.put.entry, r.entry) && bytes.Equal(r.put.leaf, r.svid.SVID.Leaf()) && bundleSetsEqual(r.put.bundles, bundles) {
			continue
		}
		work = append(work, storeWork{id: id, entry: r.entry, svid: r.svid, put: r.put, bundles: bundles})
	}
	slices.SortFunc(work, func(a, b storeWork) int {
		switch {
		case a.id < b.id:
			return -1
		case a.id > b.id:
			return 1
		}
		return 0
	})
	return work
}

func (s *storedSVIDs) putSVID(ctx context.Context, log *slog.Logger, entry *types.Entry, svid cache.Identity, bundles map[string]*spiffebundle.Bundle) bool {
	name, metadata, err := svidstore.ParseSelectors(entry.Selectors)
	if err != nil {
		log.Error("Invalid store name in selectors", "error", err)
		return false
	}
	log = log.With("svidstore", name)
	store := s.stores[name]
	if store == nil {
		log.Error("Error storing SVID: SVIDStore not found")
		return false
	}
	id, err := cache.EntryID(entry)
	if err != nil {
		log.Error("Failed to parse record", "error", err)
		return false
	}
	// Parsed only here: few entries are stored, and the cache holds DER.
	chain, err := svid.SVID.ParseCertificates()
	if err != nil {
		log.Error("Failed to parse SVID", "error", err)
		return false
	}
	key, err := svid.SVID.Signer()
	if err != nil {
		log.Error("Failed to parse SVID key", "error", err)
		return false
	}
	req := &svidstore.X509SVID{
		SPIFFEID:         id,
		CertChain:        chain,
		PrivateKey:       key,
		ExpiresAt:        svid.SVID.NotAfter(),
		Metadata:         metadata,
		FederatedBundles: map[string][]*x509.Certificate{},
	}
	for name, b := range bundles {
		if name == s.td.Name() {
			req.Bundle = b.X509Authorities()
		} else {
			req.FederatedBundles[name] = b.X509Authorities()
		}
	}
	if err := store.PutX509SVID(ctx, req); err != nil {
		log.Error("Failed to put X509-SVID", "error", err)
		return false
	}
	log.Debug("SVID stored successfully", "spiffe_id", id.String())
	return true
}

// delete removes an entry's SVID from its store. It reports whether there
// is nothing left to do: done, or refused as malformed (InvalidArgument),
// which no retry can fix.
func (s *storedSVIDs) delete(ctx context.Context, log *slog.Logger, entry *types.Entry) bool {
	name, metadata, err := svidstore.ParseSelectors(entry.Selectors)
	if err != nil {
		log.Error("Invalid store name in selectors", "error", err)
		return false
	}
	log = log.With("svidstore", name)
	store := s.stores[name]
	if store == nil {
		log.Error("Error deleting SVID: SVIDStore not found")
		return false
	}
	err = store.DeleteX509SVID(ctx, metadata)
	switch status.Code(err) {
	case codes.OK:
		log.Debug("SVID deleted successfully")
		return true
	case codes.InvalidArgument:
		log.Debug("Failed to delete SVID because of malformed selectors", "error", err)
		return true
	default:
		log.Error("Failed to delete SVID", "error", err)
		return false
	}
}

// bundlesFor returns the bundles a stored SVID carries: the agent's trust
// domain's and those of the trust domains its entry federates with, keyed
// as the entry names them.
func (s *storedSVIDs) bundlesFor(e *types.Entry, own *spiffebundle.Bundle, federated map[spiffeid.TrustDomain]*spiffebundle.Bundle) map[string]*spiffebundle.Bundle {
	out := map[string]*spiffebundle.Bundle{}
	if own != nil {
		out[s.td.Name()] = own
	}
	for _, name := range e.FederatesWith {
		td, err := spiffeid.TrustDomainFromString(name)
		if err != nil || td == s.td {
			continue
		}
		if b, ok := federated[td]; ok {
			out[name] = b
		}
	}
	return out
}

func bundleSetsEqual(a, b map[string]*spiffebundle.Bundle) bool {
	if len(a) != len(b) {
		return false
	}
	for k, x := range a {
		if y, ok := b[k]; !ok || !x.Equal(y) {
			return false
		}
	}
	return true
}

// selectorsEqual compares selectors as sets, as SPIRE does.
func selectorsEqual(a, b []*types.Selector) bool {
	if len(a) != len(b) {
		return false
	}
	set := make(map[[2]string]int, len(a))
	for _, s := range a {
		set[[2]string{s.Type, s.Value}]++
	}
	for _, s := range b {
		k := [2]string{s.Type, s.Value}
		if set[k] == 0 {
			return false
		}
		set[k]--
	}
	return true
}
