package manager

import (
	"context"
	"crypto"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe-hw/spire-hw/agent/keymanager"
	"github.com/spiffe-hw/spire-hw/internal/parallel"
)

// sync brings entries, bundles and SVIDs up to date with the server.
// Entries marked store_svid never reach the cache the Workload API reads:
// their SVIDs go to SVIDStores (see storedSVIDs).
func (m *Manager) sync(ctx context.Context) error {
	known := map[string]*types.Entry{}
	for _, e := range m.cache.Entries() {
		known[e.Id] = e
	}
	for _, e := range m.stored.entries() {
		known[e.Id] = e
	}
	fetch := m.cfg.Metrics.StartCall("manager", "sync", "fetch_entries_updates")
	entries, err := m.client.SyncEntries(ctx, known)
	fetch.Done(&err)
	if err != nil {
		return err
	}
	own, ownProto, err := m.client.GetBundle(ctx)
	if err != nil {
		return err
	}
	changed := m.setBundles(ctx, entries, own, ownProto)
	entries, stored := splitStored(entries)
	heldBefore := m.cache.SVIDCount()
	// Called on every sync, changed or not, for SPIRE's LRU cache metrics.
	if m.cache.SetEntries(entries) {
		changed = true
		m.pruneJWTs(entries)
	}
	m.stored.setEntries(stored)

	var mintErr error
	// A tainted authority in the bundle makes every SVID chaining to it
	// due now, not at half-life.
	taint := taintedIn(ownProto)
	if m.cache.Evict(m.cfg.X509SVIDCacheMaxSize) > 0 {
		changed = true
	}
	// SVIDs dropped with their entries, or by the limit.
	svidsChanged := heldBefore - m.cache.SVIDCount()
	svids := m.cache.SVIDs()
	m.processTainted(taint, svids)
	now := m.clock()
	m.reportStale("", entries, svids, now)
	need := limitSVIDs(svidsToRenew(entries, svids, now, taint), svids, m.cache.Active(), m.cfg.X509SVIDCacheMaxSize)
	if len(need) > 0 {
		issued, err := m.mintSVIDs(ctx, need, own)
		if len(issued) > 0 {
			changed = true
			m.cache.SetSVIDs(issued)
		}
		svidsChanged += len(issued)
		mintErr = err
	}
	defer m.memory.changed(svidsChanged)
	if mintErr == nil {
		held := m.stored.svids()
		m.reportStale(cacheTypeSVIDStore, stored, held, now)
		if need := m.stored.storable(svidsToRenew(stored, held, m.clock(), taint)); len(need) > 0 {
			issued, err := m.mintSVIDs(ctx, need, own)
			m.stored.setSVIDs(issued)
			mintErr = err
		}
	}
	// Stores are pushed on their own goroutine (see storedSVIDs.run): a
	// slow or hung SVIDStore plugin must hold back neither the SVIDs
	// workloads get on the Workload API nor the next sync.
	m.stored.schedule(own, m.cache.FederatedBundles())
	if mintErr != nil {
		if perr := m.persistIf(changed); perr != nil {
			m.log.Error("Could not save the SVID cache", "error", perr)
		}
		return mintErr
	}
	// Expiry is a change too: readers must stop seeing expired SVIDs.
	m.cache.Refresh()
	return m.persistIf(changed)
}

func (m *Manager) persistIf(changed bool) error {
	if !changed {
		return nil
	}
	return m.persist()
}

// setBundles installs the trust domain's bundle and fetches the federated
// bundles the entries ask for. A federated bundle the server does not have
// is left out; one that cannot be fetched now keeps its previous value.
func (m *Manager) setBundles(ctx context.Context, entries []*types.Entry, own *spiffebundle.Bundle, ownProto *types.Bundle) bool {
	changed := false
	if prev := m.cache.Bundle(); prev == nil || !prev.Equal(own) {
		m.cache.SetBundle(own)
		m.client.SetBundle(own.X509Bundle())
		changed = true
	}
	prevFed := m.cache.FederatedBundles()
	fed := map[spiffeid.TrustDomain]*spiffebundle.Bundle{}
	protos := map[string]*types.Bundle{m.cfg.TrustDomain.Name(): ownProto}
	m.mu.Lock()
	prevProtos := m.bundles
	m.mu.Unlock()
	for _, td := range federatedDomains(entries, m.cfg.TrustDomain) {
		b, bp, err := m.client.GetFederatedBundle(ctx, td)
		switch {
		case err == nil:
			fed[td], protos[td.Name()] = b, bp
		case status.Code(err) == codes.NotFound:
			m.log.Warn("Federated bundle not found on the server", "trust_domain", td.Name())
		default:
			m.log.Warn("Could not fetch a federated bundle; keeping the previous one", "trust_domain", td.Name(), "error", err)
			if b, ok := prevFed[td]; ok {
				fed[td], protos[td.Name()] = b, prevProtos[td.Name()]
			}
		}
	}
	if !bundleMapsEqual(prevFed, fed) {
		m.cache.SetFederatedBundles(fed)
		changed = true
	}
	m.mu.Lock()
	m.bundles = protos
	m.mu.Unlock()
	return changed
}

func bundleMapsEqual(a, b map[spiffeid.TrustDomain]*spiffebundle.Bundle) bool {
	if len(a) != len(b) {
		return false
	}
	for td, x := range a {
		y, ok := b[td]
		if !ok || !x.Equal(y) {
			return false
		}
	}
	return true
}

// federatedDomains lists, sorted, the foreign trust domains entries
// federate with.
func federatedDomains(entries []*types.Entry, own spiffeid.TrustDomain) []spiffeid.TrustDomain {
	set := map[spiffeid.TrustDomain]struct{}{}
	for _, e := range entries {
		for _, name := range e.FederatesWith {
			td, err := spiffeid.TrustDomainFromString(name)
			if err == nil && td != own {
				set[td] = struct{}{}
			}
		}
	}
	out := make([]spiffeid.TrustDomain, 0, len(set))
	for td := range set {
		out = append(out, td)
	}
	slices.SortFunc(out, func(a, b spiffeid.TrustDomain) int {
		if a.Name() < b.Name() {
			return -1
		}
		if a.Name() > b.Name() {
			return 1
		}
		return 0
	})
	return out
}

// svidsToRenew decides which entries need a new X509-SVID at now: those
// without one, whose SVID is past half its lifetime, chains to an
// authority the bundle marks tainted (taint may be nil), was issued for an
// older revision of the entry (its SPIFFE ID, DNS names or TTL may have
// changed), or does not carry the entry's SPIFFE ID.
func svidsToRenew(entries []*types.Entry, svids map[string]cache.Identity, now time.Time, taint *taintSet) []*types.Entry {
	var out []*types.Entry
	for _, e := range entries {
		if needsSVID(e, svids[e.Id], now, taint) {
			out = append(out, e)
		}
	}
	return out
}

// wantSVIDs tells the run loop that a workload waits for SVIDs it lacks;
// never blocks, and calls before the loop mints are one.
func (m *Manager) wantSVIDs() {
	select {
	case m.svidsWanted <- struct{}{}:
	default:
	}
}

// mintWanted mints the SVIDs that the entries of waiting and connected
// workloads lack, without a sync: as SPIRE's agent does every 500 ms, but
// at once, and without fetching every entry again, which at 50,000 entries
// was most of the wait. Entries are the last sync's; one the server has
// since deleted is refused by it and the next sync drops it. It reports
// whether it minted any, for the caller to save the cache.
func (m *Manager) mintWanted(ctx context.Context) (minted bool) {
	own := m.cache.Bundle()
	if own == nil || m.AgentSVID() == nil {
		return false
	}
	svids := m.cache.SVIDs()
	now := m.clock()
	taint := m.tainted()
	var need []*types.Entry
	for id := range m.cache.Active() {
		e, ok := m.cache.Entry(id)
		if ok && needsSVID(e, svids[id], now, taint) {
			need = append(need, e)
		}
	}
	if len(need) == 0 {
		return false
	}
	slices.SortFunc(need, func(a, b *types.Entry) int { return strings.Compare(a.Id, b.Id) })
	issued, err := m.mintSVIDs(ctx, need, own)
	if len(issued) > 0 {
		m.cache.SetSVIDs(issued)
		m.memory.changed(len(issued))
	}
	if err != nil {
		m.log.Warn("Could not mint the SVIDs a workload waits for; the next sync retries", "error", err)
	}
	return len(issued) > 0
}

// limitSVIDs keeps, of the entries that need an SVID, those within SPIRE's
// x509_svid_cache_max_size: every entry that holds one already (a renewal
// keeps the count) or that a connected workload matches (it is never denied
// an identity, whatever the limit), then others in entry order as long as
// the SVIDs held and to be minted stay within limit. The rest are minted
// when a workload asks (SubscribeToCacheChanges).
func limitSVIDs(need []*types.Entry, held map[string]cache.Identity, active map[string]struct{}, limit int) []*types.Entry {
	room := limit - len(held)
	out := need[:0:0]
	var rest []*types.Entry
	for _, e := range need {
		_, isHeld := held[e.Id]
		_, isActive := active[e.Id]
		switch {
		case isHeld:
			out = append(out, e)
		case isActive:
			out = append(out, e)
			room--
		default:
			rest = append(rest, e)
		}
	}
	for _, e := range rest {
		if room <= 0 {
			break
		}
		out = append(out, e)
		room--
	}
	return out
}

// countTainted counts the SVIDs that chain to a tainted authority.
func countTainted(svids map[string]cache.Identity, taint *taintSet) int {
	n := 0
	for _, s := range svids {
		if taint.svidTainted(s.SVID) {
			n++
		}
	}
	return n
}

func needsSVID(e *types.Entry, s cache.Identity, now time.Time, taint *taintSet) bool {
	if s.SVID == nil {
		return true
	}
	if s.Entry != nil && s.Entry.RevisionNumber != e.RevisionNumber {
		return true
	}
	if taint.svidTainted(s.SVID) {
		return true
	}
	if pastHalfLife(s.SVID.NotBefore(), s.SVID.NotAfter(), now) {
		return true
	}
	want, err := cache.EntryID(e)
	if err != nil {
		return false // unusable entry: asking the server would fail too
	}
	got := s.SVID.ID()
	return got.IsZero() || got != want
}

// keysPerWorker is the fewest entries of a mint that get a goroutine of
// their own (see parallel.Each).
const keysPerWorker = 8

// mintSVIDs generates a key per entry and asks the server to sign them. It
// returns the SVIDs it obtained, checked against the trust domain's bundle,
// even when part of the work failed.
func (m *Manager) mintSVIDs(ctx context.Context, entries []*types.Entry, bundle *spiffebundle.Bundle) (map[string]cache.Identity, error) {
	// Keys and CSRs are made, and the answers verified, on every
	// processor: each costs tens of microseconds of ECDSA, and an agent
	// starting with thousands of entries waits for all of them.
	type prepared struct {
		id  spiffeid.ID
		key crypto.Signer
		csr []byte
		err error
	}
	prep := make([]prepared, len(entries))
	parallel.Each(len(entries), keysPerWorker, func(i int) {
		p := &prep[i]
		var err error
		if p.id, err = cache.EntryID(entries[i]); err != nil {
			p.id = spiffeid.ID{}
			return
		}
		// Workload keys are made in memory, as SPIRE makes them: they are
		// persisted in the SVID cache and handed to SVIDStores, which a
		// key held by a KeyManager plugin could not be.
		if p.key, err = keymanager.GenerateECKey(); err != nil {
			p.err = fmt.Errorf("manager: workload key: %w", err)
			return
		}
		p.csr, p.err = workloadCSR(p.key, p.id)
	})
	params := make([]*svidv1.NewX509SVIDParams, 0, len(entries))
	keys := make([]crypto.Signer, 0, len(entries))
	ids := make([]spiffeid.ID, 0, len(entries))
	for i, p := range prep {
		if p.err != nil {
			return nil, p.err
		}
		if p.id.IsZero() {
			continue
		}
		params = append(params, &svidv1.NewX509SVIDParams{EntryId: entries[i].Id, Csr: p.csr})
		keys = append(keys, p.key)
		ids = append(ids, p.id)
	}
	byID := map[string]*types.Entry{}
	for _, e := range entries {
		byID[e.Id] = e
	}
	fetch := m.cfg.Metrics.StartCall("manager", "sync", "fetch_svids_updates")
	results, err := m.client.NewX509SVIDs(ctx, params)
	fetch.Done(&err)
	// Each answer's verdict is reached in parallel, and logged and kept
	// in order after.
	type verdict struct {
		svid *cache.X509SVID
		// warn and args say why the answer is discarded.
		warn string
		args []any
	}
	verdicts := make([]verdict, len(results))
	now := m.clock()
	parallel.Each(len(results), keysPerWorker, func(i int) {
		r, v := results[i], &verdicts[i]
		if r.Err != nil {
			v.warn, v.args = "Server did not issue an SVID", []any{"error", r.Err}
			return
		}
		got, _, verr := x509svid.Verify(r.Chain, bundle, x509svid.WithTime(now))
		switch {
		case verr != nil:
			v.warn, v.args = "Discarding an SVID that does not verify", []any{"error", verr}
		case got != ids[i]:
			v.warn, v.args = "Discarding an SVID for the wrong SPIFFE ID", []any{"got", got.String(), "want", ids[i].String()}
		case !publicKeyEqual(r.Chain[0].PublicKey, keys[i].Public()):
			v.warn = "Discarding an SVID for another key"
		default:
			svid, serr := cache.NewX509SVID(r.Chain, keys[i])
			if serr != nil {
				v.warn, v.args = "Discarding an SVID whose key cannot be kept", []any{"error", serr}
				return
			}
			v.svid = svid
		}
	})
	out := map[string]cache.Identity{}
	failed := 0
	for i, v := range verdicts {
		entryID := params[i].EntryId
		if v.svid == nil {
			failed++
			m.log.Warn(v.warn, append([]any{"entry_id", entryID}, v.args...)...)
			continue
		}
		out[entryID] = cache.Identity{Entry: byID[entryID], SVID: v.svid}
	}
	if err != nil {
		return out, err
	}
	if failed > 0 {
		m.log.Warn("Some SVIDs were not issued; they will be retried on the next sync", "failed", failed, "issued", len(out))
	}
	return out, nil
}
