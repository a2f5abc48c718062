package cache

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"

	"github.com/spiffe-hw/spire-hw/telemetry"
)

// EntryID returns the SPIFFE ID an entry issues.
func EntryID(e *types.Entry) (spiffeid.ID, error) {
	if e.GetSpiffeId() == nil {
		return spiffeid.ID{}, errors.New("cache: entry without a SPIFFE ID")
	}
	td, err := spiffeid.TrustDomainFromString(e.SpiffeId.TrustDomain)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("cache: entry SPIFFE ID: %w", err)
	}
	id, err := spiffeid.FromPath(td, e.SpiffeId.Path)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("cache: entry SPIFFE ID: %w", err)
	}
	return id, nil
}

// Cache is the agent's in-memory view: authorized entries indexed by
// selector, their SVIDs, and bundles. Readers subscribe by selector set.
// It is safe for concurrent use.
type Cache struct {
	td    spiffeid.TrustDomain
	clock func() time.Time

	mu      sync.Mutex
	entries map[string]*types.Entry
	index   map[selectorKey]map[string]struct{} // selector -> entry IDs
	svids   map[string]Identity                 // entry ID -> SVID
	// access is when a workload last asked for each entry (Unix ns), for
	// eviction (lru.go).
	access    map[string]int64
	bundle    *spiffebundle.Bundle
	federated map[spiffeid.TrustDomain]*spiffebundle.Bundle
	subs      map[*subscription]struct{}
	wants     map[*want]struct{}
	// bundleSubs are SubscribeToBundles' readers (bundles.go).
	bundleSubs map[*bundleSubscription]struct{}
	// fedChanged holds the trust domains whose federated bundle changed
	// since the last SetEntries, which counts their entries as updated.
	fedChanged map[spiffeid.TrustDomain]struct{}

	metrics *telemetry.Metrics
}

type selectorKey struct{ typ, value string }

// New returns an empty cache for trust domain td. clock decides which SVIDs
// have expired; nil means time.Now. metrics receives SPIRE's LRU cache
// metrics (see SetEntries and SetSVIDs); nil drops them.
func New(td spiffeid.TrustDomain, clock func() time.Time, metrics *telemetry.Metrics) *Cache {
	if clock == nil {
		clock = time.Now
	}
	return &Cache{
		td:        td,
		clock:     clock,
		entries:   map[string]*types.Entry{},
		index:     map[selectorKey]map[string]struct{}{},
		svids:     map[string]Identity{},
		access:    map[string]int64{},
		federated: map[spiffeid.TrustDomain]*spiffebundle.Bundle{},
		subs:      map[*subscription]struct{}{},
		wants:     map[*want]struct{}{},
		metrics:   metrics,
	}
}

// SetEntries replaces the set of authorized entries and reports whether it
// differs from the one held. SVIDs of entries that are gone are dropped.
//
// Call it on every sync, changed or not: as SPIRE's LRU cache does on each
// of its updates, it emits lru_cache_entry_add, lru_cache_entry_remove and
// lru_cache_entry_update (zero included), and the lru_cache_record_map_size
// and lru_cache_svid_map_size gauges. An update is SPIRE's: a known entry
// whose selectors or federates_with changed, or one of whose federated
// bundles changed since the last call; a change of its other fields (a
// TTL, DNS names) is not counted, though it is a change.
func (c *Cache) SetEntries(entries []*types.Entry) bool {
	c.mu.Lock()
	added, updated, changed := 0, 0, false
	seen := make(map[string]struct{}, len(entries))
	for _, e := range entries {
		seen[e.Id] = struct{}{}
		old, ok := c.entries[e.Id]
		if !ok {
			added++
			changed = true
			continue
		}
		differs := old != e && !proto.Equal(old, e)
		changed = changed || differs
		if differs && (!sameSelectors(old.Selectors, e.Selectors) || !sameStrings(old.FederatesWith, e.FederatesWith)) ||
			c.federatedChangedLocked(e) {
			updated++
		}
	}
	removed := 0
	for id := range c.entries {
		if _, ok := seen[id]; !ok {
			removed++
		}
	}
	changed = changed || removed > 0 || len(seen) != len(entries)
	c.fedChanged = nil
	if changed {
		c.replaceEntriesLocked(entries)
	}
	records, svids := len(c.entries), len(c.svids)
	c.mu.Unlock()

	c.metrics.IncrCounter([]string{"lru_cache_entry_add"}, float32(added))
	c.metrics.IncrCounter([]string{"lru_cache_entry_update"}, float32(updated))
	c.metrics.IncrCounter([]string{"lru_cache_entry_remove"}, float32(removed))
	c.metrics.SetGauge([]string{"lru_cache_record_map_size"}, float32(records))
	c.metrics.SetGauge([]string{"lru_cache_svid_map_size"}, float32(svids))
	return changed
}

func (c *Cache) replaceEntriesLocked(entries []*types.Entry) {
	c.entries = make(map[string]*types.Entry, len(entries))
	c.index = map[selectorKey]map[string]struct{}{}
	for _, e := range entries {
		c.entries[e.Id] = e
		for _, s := range e.Selectors {
			k := selectorKey{s.Type, s.Value}
			if c.index[k] == nil {
				c.index[k] = map[string]struct{}{}
			}
			c.index[k][e.Id] = struct{}{}
		}
	}
	for id := range c.svids {
		if _, ok := c.entries[id]; !ok {
			delete(c.svids, id)
		}
	}
	for id := range c.access {
		if _, ok := c.entries[id]; !ok {
			delete(c.access, id)
		}
	}
	c.notifyLocked()
}

// federatedChangedLocked reports whether a bundle e federates with changed
// since the last SetEntries.
func (c *Cache) federatedChangedLocked(e *types.Entry) bool {
	if len(c.fedChanged) == 0 {
		return false
	}
	for _, name := range e.FederatesWith {
		if td, err := spiffeid.TrustDomainFromString(name); err == nil {
			if _, ok := c.fedChanged[td]; ok {
				return true
			}
		}
	}
	return false
}

// sameSelectors compares two selector lists as sets.
func sameSelectors(a, b []*types.Selector) bool {
	as := newSelectorSet(a)
	bs := newSelectorSet(b)
	if len(as) != len(bs) {
		return false
	}
	for k := range as {
		if _, ok := bs[k]; !ok {
			return false
		}
	}
	return true
}

// sameStrings compares two string lists as sets.
func sameStrings(a, b []string) bool {
	as := make(map[string]struct{}, len(a))
	for _, s := range a {
		as[s] = struct{}{}
	}
	bs := make(map[string]struct{}, len(b))
	for _, s := range b {
		if _, ok := as[s]; !ok {
			return false
		}
		bs[s] = struct{}{}
	}
	return len(as) == len(bs)
}

// SetSVIDs stores SVIDs by entry ID; SVIDs for unknown entries are ignored.
// An SVID's Entry is the entry as it was when the SVID was issued (its
// revision tells the manager whether to re-issue); nil means the current
// one. Workloads always see the current entry.
//
// It sets lru_cache_svid_map_size, as SPIRE's cache does when it stores
// SVIDs.
func (c *Cache) SetSVIDs(svids map[string]Identity) {
	c.mu.Lock()
	for id, s := range svids {
		e, ok := c.entries[id]
		if !ok || s.SVID == nil {
			continue
		}
		if s.Entry == nil {
			s.Entry = e
		}
		c.svids[id] = s
	}
	c.notifyLocked()
	n := len(c.svids)
	c.mu.Unlock()
	c.metrics.SetGauge([]string{"lru_cache_svid_map_size"}, float32(n))
}

// SetBundle replaces the trust domain's bundle.
func (c *Cache) SetBundle(b *spiffebundle.Bundle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bundle = b
	c.notifyLocked()
}

// SetFederatedBundles replaces the federated bundles.
func (c *Cache) SetFederatedBundles(bundles map[spiffeid.TrustDomain]*spiffebundle.Bundle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := make(map[spiffeid.TrustDomain]*spiffebundle.Bundle, len(bundles))
	for td, b := range bundles {
		if old, ok := c.federated[td]; !ok || !old.Equal(b) {
			c.markFederatedChangedLocked(td)
		}
		next[td] = b
	}
	for td := range c.federated {
		if _, ok := next[td]; !ok {
			c.markFederatedChangedLocked(td)
		}
	}
	c.federated = next
	c.notifyLocked()
}

func (c *Cache) markFederatedChangedLocked(td spiffeid.TrustDomain) {
	if c.fedChanged == nil {
		c.fedChanged = map[spiffeid.TrustDomain]struct{}{}
	}
	c.fedChanged[td] = struct{}{}
}

// Refresh re-evaluates every subscription, so that readers stop seeing
// SVIDs that expired since the last change.
func (c *Cache) Refresh() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.notifyLocked()
}

// Entries returns the authorized entries, sorted by ID.
func (c *Cache) Entries() []*types.Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*types.Entry, 0, len(c.entries))
	for _, e := range c.entries {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *types.Entry) int { return compareString(a.Id, b.Id) })
	return out
}

// Entry returns the entry with this ID.
func (c *Cache) Entry(id string) (*types.Entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[id]
	return e, ok
}

// SVIDs returns a copy of the stored SVIDs by entry ID.
func (c *Cache) SVIDs() map[string]Identity {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]Identity, len(c.svids))
	for id, s := range c.svids {
		out[id] = s
	}
	return out
}

// SVIDCount is the number of SVIDs held.
func (c *Cache) SVIDCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.svids)
}

// Bundle returns the trust domain's bundle, or nil.
func (c *Cache) Bundle() *spiffebundle.Bundle {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bundle
}

// FederatedBundles returns a copy of the federated bundles.
func (c *Cache) FederatedBundles() map[spiffeid.TrustDomain]*spiffebundle.Bundle {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[spiffeid.TrustDomain]*spiffebundle.Bundle, len(c.federated))
	for td, b := range c.federated {
		out[td] = b
	}
	return out
}

// MatchingEntries returns the entries a workload with these selectors may
// use: those whose every selector is among the workload's (SPIRE's
// semantics: an entry is a subset match). Entries without selectors never
// match.
func (c *Cache) MatchingEntries(selectors []*types.Selector) []*types.Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.matchLocked(newSelectorSet(selectors))
}

func newSelectorSet(selectors []*types.Selector) map[selectorKey]struct{} {
	set := make(map[selectorKey]struct{}, len(selectors))
	for _, s := range selectors {
		if s != nil {
			set[selectorKey{s.Type, s.Value}] = struct{}{}
		}
	}
	return set
}

func (c *Cache) matchLocked(set map[selectorKey]struct{}) []*types.Entry {
	// Candidates share at least one selector with the workload; only they
	// need the full subset check.
	seen := map[string]struct{}{}
	var out []*types.Entry
	for k := range set {
		for id := range c.index[k] {
			if _, ok := seen[id]; ok {
				continue
			}
			seen[id] = struct{}{}
			e := c.entries[id]
			if subset(e.Selectors, set) {
				out = append(out, e)
			}
		}
	}
	slices.SortFunc(out, compareEntries)
	return out
}

func subset(selectors []*types.Selector, set map[selectorKey]struct{}) bool {
	if len(selectors) == 0 {
		return false
	}
	for _, s := range selectors {
		if _, ok := set[selectorKey{s.Type, s.Value}]; !ok {
			return false
		}
	}
	return true
}

// compareEntries orders identities oldest entry first, then by ID, so that
// the default (first) SVID a workload sees is stable.
func compareEntries(a, b *types.Entry) int {
	if a.CreatedAt != b.CreatedAt {
		if a.CreatedAt < b.CreatedAt {
			return -1
		}
		return 1
	}
	return compareString(a.Id, b.Id)
}

func compareString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// FetchWorkloadUpdate returns what a workload with these selectors may see
// now.
func (c *Cache) FetchWorkloadUpdate(selectors []*types.Selector) *WorkloadUpdate {
	c.mu.Lock()
	defer c.mu.Unlock()
	u, _ := c.buildLocked(newSelectorSet(selectors))
	c.touchLocked(u.Entries)
	return u
}

// buildLocked assembles a workload's update and a digest of everything in
// it, which tells whether a subscriber must be told about a change.
func (c *Cache) buildLocked(set map[selectorKey]struct{}) (*WorkloadUpdate, [32]byte) {
	now := c.clock()
	h := sha256.New()
	u := &WorkloadUpdate{Bundle: c.bundle, FederatedBundles: map[spiffeid.TrustDomain]*spiffebundle.Bundle{}}
	u.Entries = c.matchLocked(set)
	for _, e := range u.Entries {
		s, ok := c.svids[e.Id]
		if !ok || !usable(e, s, now) {
			continue
		}
		u.Identities = append(u.Identities, Identity{Entry: e, SVID: s.SVID})
		writeString(h, e.Id)
		writeInt(h, e.RevisionNumber)
		h.Write(s.SVID.Leaf())
		for _, name := range e.FederatesWith {
			td, err := spiffeid.TrustDomainFromString(name)
			if err != nil {
				continue
			}
			if b, ok := c.federated[td]; ok {
				u.FederatedBundles[td] = b
			}
		}
	}
	writeString(h, "bundle")
	hashBundle(h, c.bundle)
	tds := make([]spiffeid.TrustDomain, 0, len(u.FederatedBundles))
	for td := range u.FederatedBundles {
		tds = append(tds, td)
	}
	slices.SortFunc(tds, func(a, b spiffeid.TrustDomain) int { return compareString(a.Name(), b.Name()) })
	for _, td := range tds {
		writeString(h, td.Name())
		hashBundle(h, u.FederatedBundles[td])
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return u, sum
}

// usable says whether an SVID may be handed to a workload: unexpired and
// issued for the entry's current SPIFFE ID (an entry whose ID changed keeps
// its old SVID only until the new one arrives, and must not serve it).
func usable(e *types.Entry, s Identity, now time.Time) bool {
	if !now.Before(s.SVID.NotAfter()) {
		return false
	}
	want, err := EntryID(e)
	if err != nil {
		return false
	}
	got := s.SVID.ID()
	return !got.IsZero() && got == want
}

type hashWriter interface{ Write([]byte) (int, error) }

func writeString(h hashWriter, s string) {
	writeInt(h, int64(len(s)))
	h.Write([]byte(s))
}

func writeInt(h hashWriter, v int64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	h.Write(b[:])
}

// jwtKeyBytes identifies a JWT authority's key for the digest. The digest
// only tells one update from another within this process, so an ECDSA key
// (what SPIRE's servers make) is written as its curve and point, without
// the ASN.1 encoding of its PKIX form, which was most of the cost of
// building a workload's update (bench/wlapi); other keys keep the PKIX form.
func jwtKeyBytes(k crypto.PublicKey) ([]byte, error) {
	if ek, ok := k.(*ecdsa.PublicKey); ok && ek != nil && ek.Curve != nil {
		p, err := ek.Bytes()
		if err != nil {
			return nil, err
		}
		return append([]byte("ecdsa "+ek.Curve.Params().Name+" "), p...), nil
	}
	return x509.MarshalPKIXPublicKey(k)
}

func hashBundle(h hashWriter, b *spiffebundle.Bundle) {
	if b == nil {
		writeInt(h, -1)
		return
	}
	certs := b.X509Authorities()
	writeInt(h, int64(len(certs)))
	for _, cert := range certs {
		h.Write(cert.Raw)
	}
	jwt := b.JWTAuthorities()
	kids := make([]string, 0, len(jwt))
	for kid := range jwt {
		kids = append(kids, kid)
	}
	slices.Sort(kids)
	for _, kid := range kids {
		writeString(h, kid)
		if der, err := jwtKeyBytes(jwt[kid]); err == nil {
			h.Write(der)
		}
	}
	if seq, ok := b.SequenceNumber(); ok {
		writeInt(h, int64(seq))
	}
}

// Subscribe returns a subscription for a workload with these selectors. It
// holds the current update at once. The subscription ends with Finish or
// when ctx is done.
func (c *Cache) Subscribe(ctx context.Context, selectors []*types.Selector) Subscription {
	s := &subscription{c: c, set: newSelectorSet(selectors), ch: make(chan *WorkloadUpdate, 1)}
	c.mu.Lock()
	c.subs[s] = struct{}{}
	u, sum := c.buildLocked(s.set)
	c.touchLocked(u.Entries)
	s.deliverLocked(u, sum, true)
	c.mu.Unlock()
	stop := context.AfterFunc(ctx, s.Finish)
	c.mu.Lock()
	finished := s.finished
	s.stop = stop
	c.mu.Unlock()
	if finished {
		stop()
	}
	return s
}

// notifyLocked hands every subscriber whose view changed its new update.
func (c *Cache) notifyLocked() {
	for s := range c.subs {
		u, sum := c.buildLocked(s.set)
		s.deliverLocked(u, sum, false)
	}
	c.notifyBundlesLocked()
}

type subscription struct {
	c    *Cache
	set  map[selectorKey]struct{}
	ch   chan *WorkloadUpdate
	last [32]byte
	// stop and finished are guarded by the cache lock.
	stop     func() bool
	finished bool

	once sync.Once
}

// deliverLocked replaces any unread update with u; the writer never blocks.
// It runs with the cache lock held, which also serialises it with Finish.
func (s *subscription) deliverLocked(u *WorkloadUpdate, sum [32]byte, first bool) {
	if !first && sum == s.last {
		return
	}
	s.last = sum
	select {
	case <-s.ch: // drop the stale update the reader has not taken
	default:
	}
	select {
	case s.ch <- u:
	default: // unreachable: this writer is the only sender and just drained
	}
}

func (s *subscription) Updates() <-chan *WorkloadUpdate { return s.ch }

func (s *subscription) Finish() {
	s.once.Do(func() {
		s.c.mu.Lock()
		delete(s.c.subs, s)
		close(s.ch)
		s.finished = true
		stop := s.stop
		s.c.mu.Unlock()
		if stop != nil {
			stop()
		}
	})
}
