package federation

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe-hw/spire-hw/telemetry"
)

// hostile serves body over TLS with cert, whatever is asked.
func hostile(t *testing.T, cert *tls.Certificate, status int, body []byte) string {
	t.Helper()
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}))
	s.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s.URL + "/"
}

func doc(t *testing.T, ca *testCA, td string, seq uint64) []byte {
	t.Helper()
	sb, err := bundleFromProto(ca.bundle(t, td, seq))
	if err != nil {
		t.Fatal(err)
	}
	// The document names no trust domain; the CA's SPIFFE ID does.
	data, err := sb.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestRefreshAttacks: each hostile endpoint's bundle is refused with its
// reason, and the stored bundle of b.test stays as it was.
func TestRefreshAttacks(t *testing.T) {
	own := newTestCA(t, "") // a.test's CA without a SPIFFE ID, to test the overlap check alone
	bca := newTestCA(t, "b.test")
	evil := newTestCA(t, "evil.test")
	goodCert := bca.issue(t, serverB.String(), "127.0.0.1")
	for _, tc := range []struct {
		name    string
		url     func(t *testing.T) string
		profile spiffeidOrWeb
		want    string
	}{
		{"bundle for another trust domain", func(t *testing.T) string {
			return hostile(t, goodCert, 200, doc(t, evil, "b.test", 9))
		}, spiffeAuth, `served a bundle for trust domain "evil.test", not "b.test"`},
		{"SVID is not endpoint_spiffe_id", func(t *testing.T) string {
			return hostile(t, bca.issue(t, "spiffe://b.test/not-the-server"), 200, doc(t, bca, "b.test", 9))
		}, spiffeAuth, `unexpected ID "spiffe://b.test/not-the-server"`},
		{"SVID from another CA", func(t *testing.T) string {
			return hostile(t, evil.issue(t, serverB.String()), 200, doc(t, bca, "b.test", 9))
		}, spiffeAuth, "x509svid: could not verify leaf certificate"},
		{"web certificate not trusted", func(t *testing.T) string {
			return hostile(t, goodCert, 200, doc(t, bca, "b.test", 9))
		}, webAuth, "certificate signed by unknown authority"},
		{"oversized bundle", func(t *testing.T) string {
			big := append([]byte(`{"keys":[],"pad":"`), bytes.Repeat([]byte("a"), MaxBundleSize)...)
			return hostile(t, goodCert, 200, append(big, `"}`...))
		}, spiffeAuth, "exceeds the 4194304-byte limit"},
		{"malformed bundle", func(t *testing.T) string {
			return hostile(t, goodCert, 200, []byte(`{"keys": [{"use": "x509-svid", "x5c": ["bm90IGEgY2VydA=="]}]}`))
		}, spiffeAuth, "malformed bundle"},
		{"not JSON", func(t *testing.T) string { return hostile(t, goodCert, 200, []byte("<html>")) }, spiffeAuth, "malformed bundle"},
		{"no X.509 authorities", func(t *testing.T) string {
			return hostile(t, goodCert, 200, []byte(`{"keys": []}`))
		}, spiffeAuth, "no X.509 authorities"},
		{"sequence number goes backwards", func(t *testing.T) string {
			return hostile(t, goodCert, 200, doc(t, bca, "b.test", 4))
		}, spiffeAuth, "sequence number went backwards from 5 to 4"},
		{"our own authority", func(t *testing.T) string {
			return hostile(t, goodCert, 200, doc(t, own, "b.test", 9))
		}, spiffeAuth, `X.509 authority of this server's own trust domain "a.test"`},
		{"error status", func(t *testing.T) string { return hostile(t, goodCert, 503, []byte("down")) }, spiffeAuth, "unexpected status 503"},
		{"plain http", func(t *testing.T) string { return "http://127.0.0.1:1/" }, spiffeAuth, "is not an https URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ds := sqlitetest.Open(t)
			ctx := context.Background()
			stored := bca.bundle(t, "b.test", 5)
			if _, err := ds.SetBundle(ctx, stored); err != nil {
				t.Fatal(err)
			}
			if _, err := ds.SetBundle(ctx, own.bundle(t, "a.test", 1)); err != nil {
				t.Fatal(err)
			}
			fr := &types.FederationRelationship{TrustDomain: "b.test", BundleEndpointUrl: tc.url(t)}
			if tc.profile == spiffeAuth {
				fr.BundleEndpointProfile = &types.FederationRelationship_HttpsSpiffe{HttpsSpiffe: &types.HTTPSSPIFFEProfile{EndpointSpiffeId: serverB.String()}}
			} else {
				fr.BundleEndpointProfile = &types.FederationRelationship_HttpsWeb{HttpsWeb: &types.HTTPSWebProfile{}}
			}
			if _, err := ds.CreateFederationRelationship(ctx, fr); err != nil {
				t.Fatal(err)
			}
			m := NewManager(Config{TrustDomain: tdA, DataStore: ds})
			ok, err := m.RefreshBundleFor(ctx, tdB)
			if !ok {
				t.Fatal("relationship not found")
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
			got, err := ds.FetchBundle(ctx, "b.test")
			if err != nil || !proto.Equal(got, stored) {
				t.Fatalf("stored bundle changed: %v, %v", got, err)
			}
		})
	}
}

type spiffeidOrWeb int

const (
	spiffeAuth spiffeidOrWeb = iota
	webAuth
)

// TestRefresh fetches from a real endpoint: a new bundle is stored with
// SetBundle, an unchanged one is not written again, and RefreshBundleFor
// answers false for a trust domain without a relationship.
func TestRefresh(t *testing.T) {
	ctx := context.Background()
	dsB := sqlitetest.Open(t)
	bca, e, _ := serverBEndpoint(t, dsB, 3)
	dsA := sqlitetest.Open(t)
	// Bootstrap: A has B's CA (spire-server bundle set), and a
	// relationship from the configuration.
	if _, err := dsA.SetBundle(ctx, &types.Bundle{TrustDomain: "b.test", X509Authorities: []*types.X509Certificate{{Asn1: bca.cert.Raw}}}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	metrics, err := telemetry.New(hclconf.Telemetry{Prometheus: &hclconf.Prometheus{}}, telemetry.Options{Service: telemetry.ServerService, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	m := NewManager(Config{TrustDomain: tdA, DataStore: dsA, Metrics: metrics, Log: slog.New(slog.NewTextHandler(&logs, nil)),
		Static: []Relationship{{TrustDomain: tdB, EndpointURL: endpointURL(e), EndpointSPIFFEID: serverB}}})
	if ok, err := m.RefreshBundleFor(ctx, tdB); !ok || err != nil {
		t.Fatalf("RefreshBundleFor = %v, %v", ok, err)
	}
	if !strings.Contains(logs.String(), `msg="Bundle refreshed" trust_domain=b.test`) {
		t.Errorf("no refresh log line:\n%s", logs.String())
	}
	// SPIRE's bundle manager families, labelled with the trust domain
	// (sanitized by the sink, as go-metrics does for SPIRE).
	counts := map[string]float64{}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "trust_domain_id" && l.GetValue() == "b_test" && s.GetCounter() != nil {
					counts[f.GetName()] += s.GetCounter().GetValue()
				}
			}
		}
	}
	if counts["spire_server_bundle_manager_fetch_federated_bundle"] != 1 || counts["spire_server_bundle_manager_update_federated_bundle"] != 1 {
		t.Errorf("bundle manager counters %v, want one fetch and one update of b.test", counts)
	}
	want, _ := dsB.FetchBundle(ctx, "b.test")
	want.RefreshHint = 300
	got, _ := dsA.FetchBundle(ctx, "b.test")
	if !proto.Equal(got, want) {
		t.Fatalf("stored %v\nwant %v", got, want)
	}
	if ok, err := m.RefreshBundleFor(ctx, spiffeid.RequireTrustDomainFromString("c.test")); ok || err != nil {
		t.Fatalf("RefreshBundleFor(c.test) = %v, %v; want false, nil", ok, err)
	}
	// Unchanged: no write (the sequence number stays even if bumped
	// locally in between).
	if _, err := dsA.UpdateBundle(ctx, &types.Bundle{TrustDomain: "b.test", SequenceNumber: 3}, &types.BundleMask{SequenceNumber: true}); err != nil {
		t.Fatal(err)
	}
	local, stored, err := m.update(ctx, m.cfg.Static[0])
	if err != nil || local == nil || stored != nil {
		t.Fatalf("update of an unchanged bundle = %v, %v, %v", local, stored, err)
	}
}

// TestScheduleAndBackoff runs the Manager: the first refresh happens at
// once and schedules the next at a quarter of the hint; failures are
// retried at doubling intervals; a relationship deleted from the datastore
// stops being refreshed once a reload is triggered.
func TestScheduleAndBackoff(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dsB := sqlitetest.Open(t)
	bca, e, _ := serverBEndpoint(t, dsB, 1)
	dsA := sqlitetest.Open(t)
	if _, err := dsA.CreateFederationRelationship(ctx, &types.FederationRelationship{TrustDomain: "b.test",
		BundleEndpointUrl:     endpointURL(e),
		BundleEndpointProfile: &types.FederationRelationship_HttpsSpiffe{HttpsSpiffe: &types.HTTPSSPIFFEProfile{EndpointSpiffeId: serverB.String()}},
	}); err != nil {
		t.Fatal(err)
	}
	events := make(chan scheduled, 16)
	m := NewManager(Config{TrustDomain: tdA, DataStore: dsA, firstRetry: 10 * time.Millisecond,
		configRefresh: time.Hour, refreshed: events})
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	next := func() scheduled {
		t.Helper()
		select {
		case ev := <-events:
			return ev
		case <-time.After(10 * time.Second):
			t.Fatal("no refresh scheduled")
		}
		return scheduled{}
	}
	// No local copy of B's bundle: SPIFFE authentication cannot start,
	// and retries back off.
	var waits []time.Duration
	for range 3 {
		ev := next()
		if ev.err == nil || !strings.Contains(ev.err.Error(), "local copy of bundle not found") {
			t.Fatalf("refresh without a bootstrap bundle: %v", ev.err)
		}
		waits = append(waits, ev.next)
	}
	if waits[0] != 10*time.Millisecond || waits[1] != 20*time.Millisecond || waits[2] != 40*time.Millisecond {
		t.Fatalf("backoff %v, want 10ms 20ms 40ms", waits)
	}
	// Bootstrap B's bundle: the next attempt succeeds and waits a quarter
	// of the five-minute hint.
	if _, err := dsA.SetBundle(ctx, &types.Bundle{TrustDomain: "b.test", X509Authorities: []*types.X509Certificate{{Asn1: bca.cert.Raw}}}); err != nil {
		t.Fatal(err)
	}
	for {
		ev := next()
		if ev.err == nil {
			if ev.next != 75*time.Second {
				t.Fatalf("next refresh in %v, want 75s", ev.next)
			}
			break
		}
	}
	if b, _ := dsA.FetchBundle(ctx, "b.test"); len(b.JwtAuthorities) != 1 || b.RefreshHint != 300 {
		t.Fatalf("stored bundle after refresh: %v", b)
	}
	// Deleted relationship: the updater stops at the reload the API
	// triggers (the periodic one is an hour away here).
	if err := dsA.DeleteFederationRelationship(ctx, "b.test"); err != nil {
		t.Fatal(err)
	}
	m.TriggerConfigReload()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m.mu.Lock()
		n := len(m.updaters)
		m.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("updater of a deleted relationship still running")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestNextRefresh(t *testing.T) {
	for _, tc := range []struct {
		hint time.Duration
		set  bool
		want time.Duration
	}{
		{0, false, 5 * time.Minute},
		{10 * time.Second, true, 15 * time.Second}, // clamped to a minute
		{5 * time.Minute, true, 75 * time.Second},
		{48 * time.Hour, true, 6 * time.Hour}, // clamped to a day
	} {
		b := spiffebundle.New(tdB)
		if tc.set {
			b.SetRefreshHint(tc.hint)
		}
		if got := nextRefresh(b); got != tc.want {
			t.Errorf("hint %v: next %v, want %v", tc.hint, got, tc.want)
		}
	}
	for n, want := range map[int]time.Duration{1: 5 * time.Second, 2: 10 * time.Second, 3: 15 * time.Second, 30: 15 * time.Second} {
		if got := retryAfter(5*time.Second, n, 15*time.Second); got != want {
			t.Errorf("retryAfter(failure %d) = %v, want %v", n, got, want)
		}
	}
}

// TestRefreshEndpointInAnotherDomain: an https_spiffe endpoint may be
// served under another trust domain's ID (a bundle hosted by a partner);
// its SVID is then verified with that trust domain's stored bundle.
func TestRefreshEndpointInAnotherDomain(t *testing.T) {
	ctx := context.Background()
	dsB := sqlitetest.Open(t)
	bca := newTestCA(t, "b.test")
	if _, err := dsB.SetBundle(ctx, bca.bundle(t, "b.test", 2)); err != nil {
		t.Fatal(err)
	}
	host := newTestCA(t, "host.test")
	hostID := spiffeid.RequireFromString("spiffe://host.test/bundle-server")
	h := &certHolder{}
	h.p.Store(host.issue(t, hostID.String()))
	e := startEndpoint(t, EndpointConfig{TrustDomain: tdB, DataStore: dsB, GetCertificate: h.get})
	dsA := sqlitetest.Open(t)
	m := NewManager(Config{TrustDomain: tdA, DataStore: dsA,
		Static: []Relationship{{TrustDomain: tdB, EndpointURL: endpointURL(e), EndpointSPIFFEID: hostID}}})
	if _, err := m.RefreshBundleFor(ctx, tdB); err == nil || !strings.Contains(err.Error(), "local copy of bundle not found") {
		t.Fatalf("refresh without host.test's bundle: %v", err)
	}
	if _, err := dsA.SetBundle(ctx, &types.Bundle{TrustDomain: "host.test", X509Authorities: []*types.X509Certificate{{Asn1: host.cert.Raw}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.RefreshBundleFor(ctx, tdB); err != nil {
		t.Fatal(err)
	}
	if b, err := dsA.FetchBundle(ctx, "b.test"); err != nil || b.SequenceNumber != 2 {
		t.Fatalf("b.test's bundle: %v, %v", b, err)
	}
}
