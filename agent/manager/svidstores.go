package manager

import (
	"context"
	"crypto/x509"
	"log/slog"

	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe-hw/spire-hw/agent/svidstore"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// storedSVIDs tracks the entries marked store_svid, as SPIRE's store cache
// and SVIDStore service do: their SVIDs are never served to workloads, only
// pushed to the store their selectors name, again whenever the entry, the
// SVID or a bundle it carries changes, and deleted from the store when the
// entry goes away. Like SPIRE, it lives in memory: a restarted agent mints
// and pushes again. Only the sync loop uses it.
type storedSVIDs struct {
	stores  map[string]svidstore.Store
	td      spiffeid.TrustDomain
	log     *slog.Logger
	records map[string]*storeRecord
}

type storeRecord struct {
	// entry is nil once the server no longer lists it: the SVID must then
	// be deleted from the store.
	entry *types.Entry
	svid  cache.Identity
	// put is what the store last accepted, nil if nothing yet.
	put *storePut
}

// storePut is what a PutX509SVID carried, to tell whether to push again.
type storePut struct {
	entry   *types.Entry
	leaf    *x509.Certificate
	bundles map[string]*spiffebundle.Bundle // by trust domain name
}

func newStoredSVIDs(stores map[string]svidstore.Store, td spiffeid.TrustDomain, log *slog.Logger) *storedSVIDs {
	return &storedSVIDs{stores: stores, td: td, log: log, records: map[string]*storeRecord{}}
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
		if r.put == nil {
			delete(s.records, id)
			continue
		}
		r.entry, r.svid = nil, cache.Identity{}
	}
}

// svids returns the current SVIDs by entry ID.
func (s *storedSVIDs) svids() map[string]cache.Identity {
	out := make(map[string]cache.Identity, len(s.records))
	for id, r := range s.records {
		if r.entry != nil && len(r.svid.SVID) > 0 {
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
	for id, svid := range issued {
		if r, ok := s.records[id]; ok && r.entry != nil {
			r.svid = svid
		}
	}
}

// push brings every store up to date: deletes for removed entries, puts for
// changed ones. Failures are logged and retried on the next sync.
func (s *storedSVIDs) push(ctx context.Context, own *spiffebundle.Bundle, federated map[spiffeid.TrustDomain]*spiffebundle.Bundle) {
	for id, r := range s.records {
		log := s.log.With("entry_id", id)
		if r.entry == nil {
			if s.delete(ctx, log, r.put.entry) {
				delete(s.records, id)
			}
			continue
		}
		if len(r.svid.SVID) == 0 {
			continue
		}
		bundles := s.bundlesFor(r.entry, own, federated)
		if r.put != nil && proto.Equal(r.put.entry, r.entry) && r.put.leaf.Equal(r.svid.SVID[0]) && bundleSetsEqual(r.put.bundles, bundles) {
			continue
		}
		// Moved to other metadata or another store: remove the old copy
		// first, as SPIRE does (and, as SPIRE, go on if that fails).
		if r.put != nil && !selectorsEqual(r.put.entry.Selectors, r.entry.Selectors) {
			s.delete(ctx, log, r.put.entry)
		}
		if s.putSVID(ctx, log, r, bundles) {
			r.put = &storePut{entry: r.entry, leaf: r.svid.SVID[0], bundles: bundles}
		}
	}
}

func (s *storedSVIDs) putSVID(ctx context.Context, log *slog.Logger, r *storeRecord, bundles map[string]*spiffebundle.Bundle) bool {
	name, metadata, err := svidstore.ParseSelectors(r.entry.Selectors)
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
	id, err := cache.EntryID(r.entry)
	if err != nil {
		log.Error("Failed to parse record", "error", err)
		return false
	}
	req := &svidstore.X509SVID{
		SPIFFEID:         id,
		CertChain:        r.svid.SVID,
		PrivateKey:       r.svid.PrivateKey,
		ExpiresAt:        r.svid.SVID[0].NotAfter,
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
