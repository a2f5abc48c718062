package manager

import (
	"encoding/hex"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/agent/cache"
)

// SPIRE's cache types, the key part naming the workload cache or the
// SVIDStore one in the cache_manager metrics.
const (
	cacheTypeWorkload  = "workload"
	cacheTypeSVIDStore = "svid_store"
)

// reportStale emits SPIRE's cache_manager.expiring_svids and
// cache_manager.outdated_svids samples for one cache: the SVIDs it holds
// that are due for rotation, and the others, issued for an older revision
// of their entry. As SPIRE, a sample is added only when the count is not
// zero, and the workload cache's keys have no cache type (cacheType "")
// while the SVIDStore cache's end in svid_store.
func (m *Manager) reportStale(cacheType string, entries []*types.Entry, svids map[string]cache.Identity, now time.Time) {
	expiring, outdated := 0, 0
	for _, e := range entries {
		s, ok := svids[e.Id]
		if !ok || s.SVID == nil {
			continue
		}
		switch {
		case pastHalfLife(s.SVID.NotBefore(), s.SVID.NotAfter(), now):
			expiring++
		case s.Entry != nil && s.Entry.RevisionNumber != e.RevisionNumber:
			outdated++
		}
	}
	key := func(name string) []string {
		if cacheType == "" {
			return []string{"cache_manager", name}
		}
		return []string{"cache_manager", name, cacheType}
	}
	log := m.log
	if cacheType == cacheTypeSVIDStore {
		log = log.With("cache_type", cacheType)
	}
	if expiring > 0 {
		m.cfg.Metrics.AddSample(key("expiring_svids"), float32(expiring))
		log.Debug("Updating expiring SVIDs in cache", "expiring_svids", expiring)
	}
	if outdated > 0 {
		m.cfg.Metrics.AddSample(key("outdated_svids"), float32(outdated))
		log.Debug("Updating SVIDs with outdated attributes in cache", "outdated_svids", outdated)
	}
}

// processTainted does, once for every authority newly marked tainted in
// the trust domain's bundle, what SPIRE's manager does with it, metrics and
// log lines included:
//   - an X.509 authority: the workload SVIDs chaining to it are counted
//     (call cache_manager.workload.process_tainted_x509_svids, sample
//     cache_manager.tainted_x509_svids.workload, when there are SVIDs at
//     all), then the SVIDStore ones (call
//     cache_manager.svid_store.process_tainted_x509_svids);
//   - a JWT key: the cached JWT-SVIDs it signed are dropped (call
//     cache_manager.workload.process_tainted_jwt_svids, sample
//     cache_manager.tainted_jwt_svids.workload).
//
// The X.509-SVIDs themselves are renewed by svidsToRenew, which checks
// every SVID against every tainted authority on every sync, so an SVID
// that arrives later signed by one is still replaced.
func (m *Manager) processTainted(taint *taintSet, svids map[string]cache.Identity) {
	fresh := &taintSet{}
	var kids []string
	seen := make(map[string]struct{}, len(taint.x509))
	for _, a := range taint.x509 {
		k := string(a.Raw)
		seen[k] = struct{}{}
		if _, ok := m.taintedX509Seen[k]; !ok {
			fresh.x509 = append(fresh.x509, a)
			kids = append(kids, hex.EncodeToString(a.SubjectKeyId))
		}
	}
	// Authorities that left the bundle (revoked) are forgotten, which keeps
	// the set as small as the bundle.
	m.taintedX509Seen = seen
	if len(fresh.x509) > 0 {
		m.log.Debug("New tainted X.509 authorities found", "subject_key_ids", strings.Join(kids, ","))
		if len(svids) > 0 {
			call := m.cfg.Metrics.StartCall("cache_manager", cacheTypeWorkload, "process_tainted_x509_svids")
			n := countTainted(svids, fresh)
			m.cfg.Metrics.AddSample([]string{"cache_manager", "tainted_x509_svids", cacheTypeWorkload}, float32(n))
			call.Done(nil)
			m.log.Info("Tainted X.509 SVIDs", "tainted_x509_svids", n)
		}
		call := m.cfg.Metrics.StartCall("cache_manager", cacheTypeSVIDStore, "process_tainted_x509_svids")
		n := countTainted(m.stored.svids(), fresh)
		call.Done(nil)
		m.log.Info("Tainted X.509 SVIDs", "tainted_x509_svids", n, "cache_type", cacheTypeSVIDStore)
	}

	var newKids []string
	for kid := range taint.jwt {
		if _, ok := m.taintedJWTSeen[kid]; !ok {
			newKids = append(newKids, kid)
		}
	}
	m.taintedJWTSeen = make(map[string]struct{}, len(taint.jwt))
	for kid := range taint.jwt {
		m.taintedJWTSeen[kid] = struct{}{}
	}
	if len(newKids) == 0 {
		return
	}
	slices.Sort(newKids)
	m.log.Debug("New tainted JWT authorities found", "jwt_authority_key_ids", strings.Join(newKids, ","))
	call := m.cfg.Metrics.StartCall("cache_manager", cacheTypeWorkload, "process_tainted_jwt_svids")
	removed := m.dropTaintedJWTs(taint)
	m.cfg.Metrics.AddSample([]string{"cache_manager", "tainted_jwt_svids", cacheTypeWorkload}, float32(removed))
	call.Done(nil)
	if removed > 0 {
		m.log.Info("JWT-SVIDs were removed from the JWT cache because they were issued by a tainted authority", "tainted_jwt_svids", removed)
	}
}

// dropTaintedJWTs forgets the cached JWT-SVIDs a tainted key signed, so
// that the next fetch asks the server for a new one, and counts them.
func (m *Manager) dropTaintedJWTs(taint *taintSet) int {
	return m.jwts.drop(func(s *cache.JWTSVID) bool { return taint.jwtTainted(s.Token) })
}
