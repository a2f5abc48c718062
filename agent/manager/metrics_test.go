package manager

import (
	"context"
	"crypto/x509"
	"log/slog"
	"testing"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
	"github.com/spiffe-hw/spire-hw/telemetry"
	"github.com/spiffe-hw/spire-hw/telemetry/telemetrytest"
)

// TestManagerMetrics: a run emits SPIRE's key manager and LRU cache
// metrics; an entry's new revision makes its SVID outdated; a taint is
// processed once per authority, with SPIRE's calls and samples for both
// caches and the JWT-SVID cache; a restart on the stored SVID fetches the
// agent key.
func TestManagerMetrics(t *testing.T) {
	ca := newTestCA(t)
	srv := &fakeServer{ca: ca, agentTTL: time.Hour, svidTTL: time.Hour, token: "tok-m",
		entries: []*types.Entry{workloadEntry("web", 1, "uid:1000")}}
	addr, _ := srv.serve(t, "127.0.0.1:0")
	r := telemetrytest.New(t, telemetry.AgentService)
	a := agentSetup{dir: t.TempDir(), addr: addr, token: "tok-m", ca: ca, metrics: r.Metrics}
	m := newManager(t, a, false)
	stop := run(t, m)

	waitFor(t, "the web SVID", func() bool { return len(m.FetchWorkloadUpdate(selectors("uid:1000")).Identities) == 1 })
	for _, name := range []string{"generate_key_pair", "generate_key", "store_private_key"} {
		if got := r.Calls("spire_agent_agent_key_manager_"+name, "OK"); got != 1 {
			t.Errorf("%s calls = %d, want 1 (one attestation)", name, got)
		}
	}
	if got := r.Counter("spire_agent_lru_cache_entry_add"); got != 1 {
		t.Errorf("entries added = %v, want 1", got)
	}
	if got := r.Counter("spire_agent_lru_cache_entry_remove"); got != 0 {
		t.Errorf("entries removed = %v, want 0", got)
	}
	if got := r.Gauge("spire_agent_lru_cache_record_map_size"); got != 1 {
		t.Errorf("record map size = %v, want 1", got)
	}
	if got := r.Gauge("spire_agent_lru_cache_svid_map_size"); got != 1 {
		t.Errorf("SVID map size = %v, want 1", got)
	}

	// A new revision of the entry, same selectors: the SVID is outdated, not
	// the entry updated.
	srv.mu.Lock()
	srv.entries = []*types.Entry{workloadEntry("web", 2, "uid:1000")}
	srv.mu.Unlock()
	waitFor(t, "an outdated SVID", func() bool { n, _ := r.Samples("spire_agent_cache_manager_outdated_svids"); return n >= 1 })
	if got := r.Counter("spire_agent_lru_cache_entry_update"); got != 0 {
		t.Errorf("entries updated = %v, want 0", got)
	}

	web, _ := m.cache.Entry("web")
	if _, err := m.FetchJWTSVID(context.Background(), web, []string{"aud"}); err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	srv.tainted = true
	srv.mu.Unlock()
	for _, name := range []string{"workload_process_tainted_x509_svids", "svid_store_process_tainted_x509_svids", "workload_process_tainted_jwt_svids"} {
		name = "spire_agent_cache_manager_" + name
		waitFor(t, name, func() bool { return r.Calls(name, "OK") == 1 })
	}
	if n, sum := r.Samples("spire_agent_cache_manager_tainted_x509_svids_workload"); n != 1 || sum != 1 {
		t.Errorf("tainted X.509-SVIDs: %d samples summing to %v, want 1 of 1", n, sum)
	}
	if n, sum := r.Samples("spire_agent_cache_manager_tainted_jwt_svids_workload"); n != 1 || sum != 1 {
		t.Errorf("tainted JWT-SVIDs: %d samples summing to %v, want 1 of 1", n, sum)
	}
	left := m.jwts.len()
	if left != 0 {
		t.Errorf("%d JWT-SVIDs of the tainted key still cached", left)
	}
	// Later syncs see the same tainted authorities and do not process them
	// again.
	syncs := r.Calls("spire_agent_manager_sync_fetch_entries_updates", "OK")
	waitFor(t, "three more syncs", func() bool { return r.Calls("spire_agent_manager_sync_fetch_entries_updates", "OK") >= syncs+3 })
	for _, name := range []string{"workload_process_tainted_x509_svids", "svid_store_process_tainted_x509_svids", "workload_process_tainted_jwt_svids"} {
		if got := r.Calls("spire_agent_cache_manager_"+name, "OK"); got != 1 {
			t.Errorf("%s calls = %d after later syncs, want 1", name, got)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	// Restarted on its stored SVID, the agent fetches its key, and loads
	// its cache from disk.
	r2 := telemetrytest.New(t, telemetry.AgentService)
	a.metrics = r2.Metrics
	m2 := newManager(t, a, false)
	defer m2.Close()
	if m2.AgentSVID() == nil {
		t.Fatal("stored agent SVID not loaded")
	}
	for _, name := range []string{"fetch_private_key", "get_keys"} {
		if got := r2.Calls("spire_agent_agent_key_manager_"+name, "OK"); got != 1 {
			t.Errorf("after restart: %s calls = %d, want 1", name, got)
		}
	}
	if got := r2.Counter("spire_agent_lru_cache_entry_add"); got != 1 {
		t.Errorf("after restart: entries added = %v, want 1", got)
	}
}

// TestReportStale: SVIDs past half-life are expiring, others issued for an
// older revision outdated; a cache with neither adds no sample; the
// SVIDStore cache's keys end in svid_store.
func TestReportStale(t *testing.T) {
	root, err := testpki.NewRoot("root")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	leaf := func(notBefore, notAfter time.Time) cache.Identity {
		t.Helper()
		c, k, err := root.Issue(testpki.Leaf{CommonName: "w", NotBefore: notBefore, NotAfter: notAfter})
		if err != nil {
			t.Fatal(err)
		}
		return cache.Identity{SVID: heldSVID(t, []*x509.Certificate{c}, k)}
	}
	fresh := leaf(now.Add(-time.Minute), now.Add(time.Hour))
	old := leaf(now.Add(-time.Hour), now.Add(time.Minute))
	entries := []*types.Entry{
		workloadEntry("fresh", 1), workloadEntry("expiring", 1), workloadEntry("outdated", 2),
		workloadEntry("expiring-and-outdated", 2), workloadEntry("none", 1),
	}
	withEntry := func(id cache.Identity, rev int64) cache.Identity {
		id.Entry = &types.Entry{RevisionNumber: rev}
		return id
	}
	svids := map[string]cache.Identity{
		"fresh": withEntry(fresh, 1), "expiring": withEntry(old, 1), "outdated": withEntry(fresh, 1),
		"expiring-and-outdated": withEntry(old, 1),
	}
	r := telemetrytest.New(t, telemetry.AgentService)
	m := &Manager{cfg: Config{Metrics: r.Metrics}, log: slog.New(slog.DiscardHandler)}
	m.reportStale("", entries, svids, now)
	m.reportStale(cacheTypeSVIDStore, entries[:2], svids, now)
	m.reportStale(cacheTypeSVIDStore, entries[:1], svids, now)
	for name, want := range map[string][2]float64{
		"spire_agent_cache_manager_expiring_svids":            {1, 2},
		"spire_agent_cache_manager_outdated_svids":            {1, 1},
		"spire_agent_cache_manager_expiring_svids_svid_store": {1, 1},
		"spire_agent_cache_manager_outdated_svids_svid_store": {-1, 0},
	} {
		if n, sum := r.Samples(name); float64(n) != want[0] || sum != want[1] {
			t.Errorf("%s: %d samples summing to %v, want %v", name, n, sum, want)
		}
	}
}
