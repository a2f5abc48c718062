package cache

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"

	"github.com/spiffe-hw/spire-hw/telemetry"
	"github.com/spiffe-hw/spire-hw/telemetry/telemetrytest"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func sel(t, v string) *types.Selector { return &types.Selector{Type: t, Value: v} }

func entry(id, path string, sels ...*types.Selector) *types.Entry {
	return &types.Entry{Id: id, SpiffeId: &types.SPIFFEID{TrustDomain: td.Name(), Path: path}, Selectors: sels}
}

// svidFor returns a self-signed certificate naming the entry's SPIFFE ID;
// the cache only looks at the leaf's URI and validity.
func svidFor(t *testing.T, e *types.Entry, notAfter time.Time) Identity {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://" + e.SpiffeId.TrustDomain + e.SpiffeId.Path)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Minute), NotAfter: notAfter, URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	svid, err := NewX509SVID([]*x509.Certificate{cert}, key)
	if err != nil {
		t.Fatal(err)
	}
	return Identity{SVID: svid}
}

func ids(u *WorkloadUpdate) []string {
	var out []string
	for _, i := range u.Identities {
		out = append(out, i.Entry.Id)
	}
	return out
}

func TestMatching(t *testing.T) {
	c := New(td, nil, nil)
	entries := []*types.Entry{
		entry("a", "/a", sel("unix", "uid:1000")),
		entry("b", "/b", sel("unix", "uid:1000"), sel("unix", "gid:1000")),
		entry("c", "/c", sel("unix", "uid:2000")),
		entry("none", "/none"), // no selectors: never matches
	}
	c.SetEntries(entries)
	tests := []struct {
		name string
		sels []*types.Selector
		want []string
	}{
		{"single selector matches single-selector entry", []*types.Selector{sel("unix", "uid:1000")}, []string{"a"}},
		{"superset matches both", []*types.Selector{sel("unix", "uid:1000"), sel("unix", "gid:1000"), sel("unix", "x:y")}, []string{"a", "b"}},
		{"partial set does not match entry needing more", []*types.Selector{sel("unix", "gid:1000")}, nil},
		{"type matters", []*types.Selector{sel("k8s", "uid:1000")}, nil},
		{"no selectors match nothing", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, e := range c.MatchingEntries(tt.sels) {
				got = append(got, e.Id)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestWorkloadUpdateFiltersUnusableSVIDs(t *testing.T) {
	now := time.Now()
	c := New(td, func() time.Time { return now }, nil)
	good := entry("good", "/good", sel("t", "1"))
	expired := entry("expired", "/expired", sel("t", "1"))
	renamed := entry("renamed", "/new-name", sel("t", "1"))
	c.SetEntries([]*types.Entry{good, expired, renamed})
	old := entry("renamed", "/old-name")
	c.SetSVIDs(map[string]Identity{
		"good":    svidFor(t, good, now.Add(time.Hour)),
		"expired": svidFor(t, expired, now.Add(-time.Second)),
		"renamed": svidFor(t, old, now.Add(time.Hour)),
		"unknown": svidFor(t, good, now.Add(time.Hour)),
	})
	got := ids(c.FetchWorkloadUpdate([]*types.Selector{sel("t", "1")}))
	if len(got) != 1 || got[0] != "good" {
		t.Fatalf("identities %v, want [good]", got)
	}
	// Removing the entry drops its SVID.
	c.SetEntries([]*types.Entry{expired})
	if _, ok := c.SVIDs()["good"]; ok {
		t.Fatal("SVID of a deleted entry kept")
	}
}

func TestFederatedBundles(t *testing.T) {
	c := New(td, nil, nil)
	fedTD := spiffeid.RequireTrustDomainFromString("other.org")
	unusedTD := spiffeid.RequireTrustDomainFromString("unused.org")
	e := entry("a", "/a", sel("t", "1"))
	e.FederatesWith = []string{"other.org"}
	c.SetEntries([]*types.Entry{e})
	c.SetSVIDs(map[string]Identity{"a": svidFor(t, e, time.Now().Add(time.Hour))})
	c.SetFederatedBundles(map[spiffeid.TrustDomain]*spiffebundle.Bundle{fedTD: spiffebundle.New(fedTD), unusedTD: spiffebundle.New(unusedTD)})
	u := c.FetchWorkloadUpdate([]*types.Selector{sel("t", "1")})
	if len(u.FederatedBundles) != 1 || u.FederatedBundles[fedTD] == nil {
		t.Fatalf("federated bundles %v, want only other.org", u.FederatedBundles)
	}
	if u := c.FetchWorkloadUpdate([]*types.Selector{sel("t", "2")}); len(u.FederatedBundles) != 0 {
		t.Fatal("workload without identities got federated bundles")
	}
}

func recv(t *testing.T, s Subscription) *WorkloadUpdate {
	t.Helper()
	select {
	case u, ok := <-s.Updates():
		if !ok {
			t.Fatal("subscription closed")
		}
		return u
	case <-time.After(2 * time.Second):
		t.Fatal("no update")
	}
	return nil
}

func noUpdate(t *testing.T, s Subscription) {
	t.Helper()
	select {
	case u := <-s.Updates():
		t.Fatalf("unexpected update %v", ids(u))
	case <-time.After(50 * time.Millisecond):
	}
}

func TestSubscriptions(t *testing.T) {
	c := New(td, nil, nil)
	a := entry("a", "/a", sel("t", "1"))
	b := entry("b", "/b", sel("t", "2"))
	c.SetEntries([]*types.Entry{a, b})

	s := c.Subscribe(context.Background(), []*types.Selector{sel("t", "1")})
	defer s.Finish()
	if u := recv(t, s); len(u.Identities) != 0 {
		t.Fatalf("first update has %v, want no identity", ids(u))
	}
	noUpdate(t, s)

	c.SetSVIDs(map[string]Identity{"a": svidFor(t, a, time.Now().Add(time.Hour))})
	if got := ids(recv(t, s)); len(got) != 1 || got[0] != "a" {
		t.Fatalf("after SVID: %v", got)
	}

	// Changes that do not concern the subscriber are not delivered.
	c.SetSVIDs(map[string]Identity{"b": svidFor(t, b, time.Now().Add(time.Hour))})
	c.SetEntries([]*types.Entry{a, b, entry("c", "/c", sel("t", "3"))})
	c.Refresh()
	noUpdate(t, s)

	// A bundle change concerns everyone.
	c.SetBundle(spiffebundle.New(td))
	if u := recv(t, s); u.Bundle == nil {
		t.Fatal("bundle update without bundle")
	}
}

func TestSlowReaderSeesLatest(t *testing.T) {
	c := New(td, nil, nil)
	a := entry("a", "/a", sel("t", "1"))
	c.SetEntries([]*types.Entry{a})
	s := c.Subscribe(context.Background(), []*types.Selector{sel("t", "1")})
	defer s.Finish()
	var last Identity
	for i := 0; i < 5; i++ { // the writer never blocks on an unread channel
		last = svidFor(t, a, time.Now().Add(time.Duration(i+1)*time.Hour))
		c.SetSVIDs(map[string]Identity{"a": last})
	}
	u := recv(t, s)
	if len(u.Identities) != 1 || u.Identities[0].SVID != last.SVID {
		t.Fatal("slow reader did not get the latest update")
	}
	noUpdate(t, s)
}

func TestFinish(t *testing.T) {
	c := New(td, nil, nil)
	s := c.Subscribe(context.Background(), []*types.Selector{sel("t", "1")})
	s.Finish()
	s.Finish() // idempotent
	<-s.Updates()
	if _, ok := <-s.Updates(); ok {
		t.Fatal("channel open after Finish")
	}
	c.SetBundle(spiffebundle.New(td)) // must not panic on a finished subscriber

	ctx, cancel := context.WithCancel(context.Background())
	s2 := c.Subscribe(ctx, nil)
	<-s2.Updates()
	cancel()
	select {
	case _, ok := <-s2.Updates():
		if ok {
			t.Fatal("update after context end")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("subscription not finished when its context ended")
	}
	s2.Finish()
	c.mu.Lock()
	n := len(c.subs)
	c.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d subscriptions left registered", n)
	}
}

// TestLRUMetrics: SetEntries counts SPIRE's added, updated and removed
// entries on every call (an update being a change of selectors,
// federates_with or a federated bundle, not of other fields) and reports
// the map sizes; SetSVIDs reports the SVID map's.
func TestLRUMetrics(t *testing.T) {
	r := telemetrytest.New(t, telemetry.AgentService)
	c := New(td, nil, r.Metrics)
	check := func(step string, add, update, remove, records, svids float64) {
		t.Helper()
		for name, want := range map[string]float64{
			"spire_agent_lru_cache_entry_add":    add,
			"spire_agent_lru_cache_entry_update": update,
			"spire_agent_lru_cache_entry_remove": remove,
		} {
			if got := r.Counter(name); got != want {
				t.Errorf("%s: %s = %v, want %v", step, name, got, want)
			}
		}
		if got := r.Gauge("spire_agent_lru_cache_record_map_size"); got != records {
			t.Errorf("%s: record map size %v, want %v", step, got, records)
		}
		if got := r.Gauge("spire_agent_lru_cache_svid_map_size"); got != svids {
			t.Errorf("%s: SVID map size %v, want %v", step, got, svids)
		}
	}
	a := entry("a", "/a", sel("t", "1"))
	b := entry("b", "/b", sel("t", "2"))
	if !c.SetEntries([]*types.Entry{a, b}) {
		t.Fatal("first SetEntries reported no change")
	}
	check("first", 2, 0, 0, 2, 0)

	// The same entries, or equal copies, change nothing; zero is still
	// emitted, as SPIRE emits on every sync.
	if c.SetEntries([]*types.Entry{a, proto.Clone(b).(*types.Entry)}) {
		t.Fatal("equal entries reported as a change")
	}
	check("unchanged", 2, 0, 0, 2, 0)

	// A new revision with the same selectors is a change, not an update.
	a2 := proto.Clone(a).(*types.Entry)
	a2.RevisionNumber, a2.X509SvidTtl = 1, 60
	if !c.SetEntries([]*types.Entry{a2, b}) {
		t.Fatal("a new revision reported no change")
	}
	check("revision", 2, 0, 0, 2, 0)

	// New selectors, or a new federates_with, are updates.
	b2 := entry("b", "/b", sel("t", "2"), sel("t", "3"))
	a3 := proto.Clone(a2).(*types.Entry)
	a3.FederatesWith = []string{"other.org"}
	c.SetEntries([]*types.Entry{a3, b2})
	check("selectors and federates_with", 2, 2, 0, 2, 0)

	// Selectors reordered are the same set.
	b3 := entry("b", "/b", sel("t", "3"), sel("t", "2"))
	c.SetEntries([]*types.Entry{a3, b3})
	check("reordered", 2, 2, 0, 2, 0)

	// A federated bundle that changed updates the entries federating with
	// it, once.
	other := spiffeid.RequireTrustDomainFromString("other.org")
	c.SetFederatedBundles(map[spiffeid.TrustDomain]*spiffebundle.Bundle{other: spiffebundle.New(other)})
	if c.SetEntries([]*types.Entry{a3, b3}) {
		t.Fatal("a bundle change reported as an entry change")
	}
	check("federated bundle", 2, 3, 0, 2, 0)
	c.SetEntries([]*types.Entry{a3, b3})
	check("federated bundle again", 2, 3, 0, 2, 0)

	c.SetSVIDs(map[string]Identity{"a": svidFor(t, a3, time.Now().Add(time.Hour)), "unknown": svidFor(t, a3, time.Now().Add(time.Hour))})
	check("SVID", 2, 3, 0, 2, 1)

	// Removing an entry drops its SVID.
	c.SetEntries([]*types.Entry{b3})
	check("removed", 2, 3, 1, 1, 0)
}
