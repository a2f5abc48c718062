package manager

import (
	"context"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

func heldIDs(m *Manager) []string {
	var out []string
	for id := range m.cache.SVIDs() {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// subscribeWithin subscribes for selectors and fails unless the first
// update comes within d with exactly the entry want.
func subscribeWithin(t *testing.T, m *Manager, d time.Duration, want string, sels ...string) cache.Subscription {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	sub, err := m.SubscribeToCacheChanges(context.Background(), selectors(sels...))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case u := <-sub.Updates():
		if ids := identityIDs(u); !slices.Equal(ids, []string{want}) {
			sub.Finish()
			t.Fatalf("first update for %v holds %v, want [%s]", sels, ids, want)
		}
	case <-ctx.Done():
		sub.Finish()
		t.Fatalf("no update for %v within %v", sels, d)
	}
	return sub
}

// TestX509SVIDCacheMaxSize is SPIRE's x509_svid_cache_max_size: beyond
// the limit an SVID is minted when a workload subscribes (the run loop
// polls only every hour here, so it is the subscription that gets it), an
// SVID a subscriber holds is never evicted even above the limit, and the
// others go least recently asked for first.
func TestX509SVIDCacheMaxSize(t *testing.T) {
	ca := newTestCA(t)
	var entries []*types.Entry
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		entries = append(entries, workloadEntry(n, 1, "uid:"+n))
	}
	srv := &fakeServer{ca: ca, agentTTL: time.Hour, svidTTL: time.Hour, token: "tok-1", entries: entries}
	addr, _ := srv.serve(t, "127.0.0.1:0")
	m := newManager(t, agentSetup{dir: t.TempDir(), addr: addr, token: "tok-1", ca: ca}, false)
	m.cfg.SyncInterval = time.Hour
	m.cfg.X509SVIDCacheMaxSize = 3
	// No notice stream: this test counts syncs.
	m.cfg.DisableNotices = true
	run(t, m)
	waitFor(t, "the first round", func() bool { return len(m.cache.Entries()) == 5 && len(m.cache.SVIDs()) > 0 })
	if got := heldIDs(m); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("after the first sync SVIDs are held for %v, want [a b c] (limit 3, entry order)", got)
	}
	// JWT-SVIDs do not need an X.509-SVID held.
	e, _ := m.cache.Entry("e")
	if _, err := m.FetchJWTSVID(context.Background(), e, []string{"aud"}); err != nil {
		t.Fatalf("JWT-SVID for an entry without an X.509-SVID: %v", err)
	}

	// "a" is asked for (and let go), then "d" and "e" are subscribed.
	if m.cache.Missing(selectors("uid:a")) {
		t.Fatal("a's SVID is missing")
	}
	// snapshot counts every read of the entries, BatchNewX509SVID's too.
	fetches := func() int {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.syncs - srv.x509Calls
	}
	syncs := fetches()
	subD := subscribeWithin(t, m, 5*time.Second, "d", "uid:d")
	defer subD.Finish()
	subE := subscribeWithin(t, m, 5*time.Second, "e", "uid:e")
	defer subE.Finish()
	// They were minted without a sync (entries are not fetched again for
	// them), so nothing was evicted yet: five, two above the limit.
	if n := fetches() - syncs; n != 0 {
		t.Fatalf("%d syncs to mint SVIDs on demand, want none", n)
	}
	if got := heldIDs(m); !slices.Equal(got, []string{"a", "b", "c", "d", "e"}) {
		t.Fatalf("with d and e subscribed SVIDs are held for %v, want [a b c d e]", got)
	}
	// The next sync evicts b and c (never asked for) and keeps a (asked
	// for), d and e (subscribed).
	m.noticed()
	waitFor(t, "the eviction of b and c", func() bool { return len(m.cache.SVIDs()) == 3 })
	if got := heldIDs(m); !slices.Equal(got, []string{"a", "d", "e"}) {
		t.Fatalf("after a sync with d and e subscribed SVIDs are held for %v, want [a d e]", got)
	}
	// Without subscribers nothing more goes: three is the limit.
	subD.Finish()
	subE.Finish()
	m.noticed()
	time.Sleep(300 * time.Millisecond)
	if got := heldIDs(m); !slices.Equal(got, []string{"a", "d", "e"}) {
		t.Fatalf("after the subscribers left SVIDs are held for %v, want [a d e]", got)
	}
	// Only the entries that hold an SVID are persisted: the others are
	// of no use to a restart before the server answers.
	if err := m.persist(); err != nil {
		t.Fatal(err)
	}
	st, errs := m.store.load()
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	var stored []string
	for _, e := range st.entries {
		stored = append(stored, e.Id)
	}
	sort.Strings(stored)
	if !slices.Equal(stored, []string{"a", "d", "e"}) {
		t.Fatalf("persisted entries %v, want those holding SVIDs, [a d e]", stored)
	}
}

// limitOfOne is a manager, not yet running, of a server with entries a and
// b, and x509_svid_cache_max_size 1: the first round mints a's SVID only.
func limitOfOne(t *testing.T) (*fakeServer, *Manager) {
	t.Helper()
	ca := newTestCA(t)
	srv := &fakeServer{ca: ca, agentTTL: time.Hour, svidTTL: time.Hour, token: "tok-1",
		entries: []*types.Entry{workloadEntry("a", 1, "uid:a"), workloadEntry("b", 1, "uid:b")}}
	addr, _ := srv.serve(t, "127.0.0.1:0")
	m := newManager(t, agentSetup{dir: t.TempDir(), addr: addr, token: "tok-1", ca: ca}, false)
	m.cfg.SyncInterval = time.Hour
	m.cfg.X509SVIDCacheMaxSize = 1
	return srv, m
}

// TestSubscribeWaitsOneRound: a subscriber whose SVID cannot be minted (the
// server refuses the agent) is not held forever; it gets what there is once
// a round that started after it asked has ended.
func TestSubscribeWaitsOneRound(t *testing.T) {
	srv, m := limitOfOne(t)
	run(t, m)
	waitFor(t, "the first round", func() bool { return len(m.cache.SVIDs()) == 1 })
	srv.mu.Lock()
	srv.denyAgent = true
	srv.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub, err := m.SubscribeToCacheChanges(ctx, selectors("uid:b"))
	if err != nil {
		t.Fatalf("subscription after a failed round: %v", err)
	}
	defer sub.Finish()
	if ids := identityIDs(<-sub.Updates()); len(ids) != 0 {
		t.Fatalf("got %v from a server that refuses the agent", ids)
	}
	// A subscriber that gives up is not left waiting either.
	gone, stop := context.WithCancel(context.Background())
	stop()
	if _, err := m.SubscribeToCacheChanges(gone, selectors("uid:b")); err == nil {
		t.Fatal("subscription with a cancelled context waited and succeeded")
	}
}

// TestOnDemandSVIDNotHeldBySave: a workload waiting for an SVID minted
// on demand gets it before the agent saves its cache (a write of every SVID
// held, thousands with a large cache, and a sync to disk), and the save
// still follows.
func TestOnDemandSVIDNotHeldBySave(t *testing.T) {
	_, m := limitOfOne(t)
	m.cfg.DisableNotices = true
	run(t, m)
	saved := func(id string) bool {
		m.store.mu.Lock()
		defer m.store.mu.Unlock()
		if m.store.written == nil {
			return false
		}
		_, ok := m.store.written.svids[id]
		return ok
	}
	// The first round saved what it minted (so that no save of its own is
	// left to wait on the lock taken below).
	waitFor(t, "the first round's save", func() bool { return len(m.cache.SVIDs()) == 1 && saved("a") })
	// Every save waits on the store's lock: while the test holds it, a
	// waiter that is only released after the save gets nothing.
	m.store.mu.Lock()
	locked := true
	defer func() {
		if locked {
			m.store.mu.Unlock()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sub, err := m.SubscribeToCacheChanges(ctx, selectors("uid:b"))
	if err != nil {
		t.Fatalf("waiting for an SVID minted on demand while the cache cannot be saved: %v", err)
	}
	defer sub.Finish()
	if ids := identityIDs(<-sub.Updates()); !slices.Equal(ids, []string{"b"}) {
		t.Fatalf("first update holds %v, want [b]", ids)
	}
	m.store.mu.Unlock()
	locked = false
	waitFor(t, "the save of b's SVID", func() bool { return saved("b") })
}

// TestJWTCacheLRU is jwt_svid_cache_max_size: beyond the limit the least
// recently used token goes; expired ones go first.
func TestJWTCacheLRU(t *testing.T) {
	now := time.Now()
	c := newJWTCache(2)
	tok := func(s string, exp time.Time) *cache.JWTSVID { return &cache.JWTSVID{Token: s, ExpiresAt: exp} }
	c.put("1", tok("1", now.Add(time.Hour)), now)
	c.put("2", tok("2", now.Add(time.Hour)), now)
	if _, ok := c.get("1"); !ok { // 1 becomes the most recently used
		t.Fatal("1 missing")
	}
	c.put("3", tok("3", now.Add(time.Hour)), now)
	if _, ok := c.get("2"); ok {
		t.Fatal("2, the least recently used, was kept beyond the limit")
	}
	for _, k := range []string{"1", "3"} {
		if _, ok := c.get(k); !ok {
			t.Fatalf("%s evicted", k)
		}
	}
	c.put("4", tok("4", now.Add(time.Second)), now)
	c.put("5", tok("5", now.Add(time.Hour)), now.Add(2*time.Second))
	if _, ok := c.get("4"); ok {
		t.Fatal("an expired token was kept")
	}
	if n := c.len(); n != 2 {
		t.Fatalf("%d tokens held, limit 2", n)
	}
	if d := newJWTCache(0); d.max != DefaultSVIDCacheMaxSize {
		t.Fatalf("default limit %d, want %d", d.max, DefaultSVIDCacheMaxSize)
	}
}
