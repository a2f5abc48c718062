package manager

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe-hw/spire-hw/agent/keymanager/disk"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor/jointoken"
	"github.com/spiffe-hw/spire-hw/agent/workloadapi"
	"github.com/spiffe-hw/spire-hw/telemetry"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

var _ workloadapi.Manager = (*Manager)(nil)

func workloadEntry(id string, rev int64, sels ...string) *types.Entry {
	e := &types.Entry{Id: id, SpiffeId: &types.SPIFFEID{TrustDomain: testTD.Name(), Path: "/workload/" + id}, RevisionNumber: rev}
	for _, s := range sels {
		e.Selectors = append(e.Selectors, &types.Selector{Type: "unix", Value: s})
	}
	return e
}

func selectors(vals ...string) []*types.Selector {
	var out []*types.Selector
	for _, v := range vals {
		out = append(out, &types.Selector{Type: "unix", Value: v})
	}
	return out
}

type agentSetup struct {
	dir   string
	addr  string
	token string
	ca    *testCA
	// metrics, if set, receives the manager's metrics.
	metrics *telemetry.Metrics
}

func newManager(t *testing.T, a agentSetup, insecure bool) *Manager {
	t.Helper()
	km, err := disk.New(filepath.Join(a.dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		TrustDomain: testTD, ServerAddress: a.addr, DataDir: a.dir,
		NodeAttestor: jointoken.New(a.token), KeyManager: km, SyncInterval: 100 * time.Millisecond,
		InsecureBootstrap: insecure, Metrics: a.metrics,
	}
	if !insecure {
		cfg.TrustBundle = []*x509.Certificate{a.ca.cert}
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func run(t *testing.T, m *Manager) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once bool
	var result error
	stop = func() error {
		if !once {
			once = true
			cancel()
			result = <-done
		}
		return result
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func identityIDs(u *cache.WorkloadUpdate) []string {
	var out []string
	for _, i := range u.Identities {
		out = append(out, i.Entry.Id)
	}
	sort.Strings(out)
	return out
}

// TestAttestSyncRestartOffline is the agent's life: attest with a join
// token, sync entries, get SVIDs over mTLS, then restart while the server
// is down and serve from the cache at once, then catch up.
func TestAttestSyncRestartOffline(t *testing.T) {
	for _, insecure := range []bool{false, true} {
		t.Run(fmt.Sprintf("insecure_bootstrap=%v", insecure), func(t *testing.T) {
			ca := newTestCA(t)
			srv := &fakeServer{ca: ca, agentTTL: time.Hour, svidTTL: time.Hour, token: "tok-1",
				entries: []*types.Entry{workloadEntry("web", 1, "uid:1000"), workloadEntry("db", 1, "uid:2000")}}
			addr, stopSrv := srv.serve(t, "127.0.0.1:0")
			a := agentSetup{dir: t.TempDir(), addr: addr, token: "tok-1", ca: ca}

			m := newManager(t, a, insecure)
			sub, _ := m.SubscribeToCacheChanges(context.Background(), selectors("uid:1000"))
			defer sub.Finish()
			if u := <-sub.Updates(); len(u.Identities) != 0 {
				t.Fatal("identities before attestation")
			}
			select {
			case <-m.Bootstrapped():
				t.Fatal("bootstrapped before Run")
			default:
			}
			stopRun := run(t, m)

			var u *cache.WorkloadUpdate
			waitFor(t, "web SVID", func() bool {
				select {
				case u = <-sub.Updates():
				case <-time.After(100 * time.Millisecond):
				}
				return u != nil && len(u.Identities) == 1 && u.Bundle != nil
			})
			select {
			case <-m.Bootstrapped():
			case <-time.After(10 * time.Second):
				t.Fatal("Bootstrapped not closed after the first sync")
			}
			id := u.Identities[0]
			bundle := x509bundle.FromX509Authorities(testTD, []*x509.Certificate{ca.cert})
			got, _, err := x509svid.Verify(chainOf(t, id.SVID), bundle)
			if err != nil {
				t.Fatalf("issued SVID does not verify: %v", err)
			}
			if got.String() != "spiffe://example.org/workload/web" {
				t.Fatalf("SVID ID %s", got)
			}
			if _, err := x509svid.ParseRaw(id.SVID.Chain(), id.SVID.PrivateKey()); err != nil {
				t.Fatalf("key does not match SVID: %v", err)
			}

			// JWT-SVIDs: issued, verifiable with the bundle's JWT keys, cached
			// per audience set regardless of order.
			j1, err := m.FetchJWTSVID(context.Background(), id.Entry, []string{"b", "a"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := jwtsvid.ParseAndValidate(j1.Token, u.Bundle, []string{"a"}); err != nil {
				t.Fatalf("JWT-SVID does not validate: %v", err)
			}
			j2, err := m.FetchJWTSVID(context.Background(), id.Entry, []string{"a", "b"})
			if err != nil || j2.Token != j1.Token {
				t.Fatalf("JWT-SVID not reused: %v", err)
			}
			if _, err := m.FetchJWTSVID(context.Background(), &types.Entry{Id: "nope"}, []string{"a"}); err == nil {
				t.Fatal("JWT-SVID for an unknown entry")
			}
			srv.mu.Lock()
			jwtCalls, attestations := srv.jwtCalls, srv.attestations
			srv.mu.Unlock()
			if jwtCalls != 1 || attestations != 1 {
				t.Fatalf("jwt calls %d, attestations %d; want 1, 1", jwtCalls, attestations)
			}

			waitFor(t, "db SVID", func() bool { return len(m.FetchWorkloadUpdate(selectors("uid:2000")).Identities) == 1 })
			if err := stopRun(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			stopSrv()

			// Restart with the server down: served at once, no attestation.
			m2 := newManager(t, a, insecure)
			defer m2.Close()
			u2 := m2.FetchWorkloadUpdate(selectors("uid:1000"))
			if len(u2.Identities) != 1 || u2.Bundle == nil || !bytes.Equal(u2.Identities[0].SVID.Leaf(), id.SVID.Leaf()) {
				t.Fatalf("restarted agent serves %v (bundle %v), want the stored web SVID", identityIDs(u2), u2.Bundle != nil)
			}
			// The stored key is served as it was read: the bytes the key
			// marshalled to before the restart.
			if !bytes.Equal(u2.Identities[0].SVID.PrivateKey(), id.SVID.PrivateKey()) {
				t.Fatal("restarted agent serves the key's PKCS#8 in another form")
			}
			if len(u2.Bundle.JWTAuthorities()) != 1 {
				t.Fatal("stored bundle lost its JWT authorities")
			}
			if m2.AgentSVID() == nil {
				t.Fatal("stored agent SVID not loaded")
			}
			stopRun2 := run(t, m2)
			time.Sleep(300 * time.Millisecond) // a few failed syncs against a dead server

			// The server returns with a new entry: the agent catches up
			// without attesting again (its token is spent).
			srv.mu.Lock()
			srv.entries = append(srv.entries, workloadEntry("cache", 1, "uid:1000", "gid:7"))
			srv.mu.Unlock()
			srv.serve(t, addr)
			waitFor(t, "catch-up", func() bool {
				return len(m2.FetchWorkloadUpdate(selectors("uid:1000", "gid:7")).Identities) == 2
			})
			if err := stopRun2(); err != nil {
				t.Fatalf("Run after restart: %v", err)
			}
			srv.mu.Lock()
			defer srv.mu.Unlock()
			if srv.attestations != 1 {
				t.Fatalf("%d attestations, want 1", srv.attestations)
			}
		})
	}
}

// heldSVID is chain and key as the cache holds them.
func heldSVID(t testing.TB, chain []*x509.Certificate, key crypto.Signer) *cache.X509SVID {
	t.Helper()
	s, err := cache.NewX509SVID(chain, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// chainOf parses a cached SVID's chain.
func chainOf(t *testing.T, s *cache.X509SVID) []*x509.Certificate {
	t.Helper()
	certs, err := s.ParseCertificates()
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

// TestSyncPaged exercises the revisions phase of SyncAuthorizedEntries:
// the first sync asks for every entry, the next only for changed ones.
func TestSyncPaged(t *testing.T) {
	ca := newTestCA(t)
	var entries []*types.Entry
	for i := range 7 {
		entries = append(entries, workloadEntry(fmt.Sprintf("e%d", i), 1, fmt.Sprintf("uid:%d", i)))
	}
	srv := &fakeServer{ca: ca, agentTTL: time.Hour, svidTTL: time.Hour, token: "t", pageSize: 3, entries: entries}
	addr, _ := srv.serve(t, "127.0.0.1:0")
	m := newManager(t, agentSetup{dir: t.TempDir(), addr: addr, token: "t", ca: ca}, false)
	defer m.Close()
	ctx := context.Background()
	if err := m.attest(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(m.cache.SVIDs()); n != 7 {
		t.Fatalf("%d SVIDs after first sync, want 7", n)
	}
	srv.mu.Lock()
	if len(srv.requestedIDs) != 7 {
		t.Fatalf("first sync asked for %d entries, want 7", len(srv.requestedIDs))
	}
	srv.requestedIDs = nil
	srv.entries[2] = workloadEntry("e2", 2, "uid:new")
	srv.entries = srv.entries[:6] // e6 deleted
	srv.mu.Unlock()
	if err := m.sync(ctx); err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	asked := srv.requestedIDs
	srv.mu.Unlock()
	if len(asked) != 1 || asked[0] != "e2" {
		t.Fatalf("second sync asked for %v, want [e2]", asked)
	}
	if len(m.FetchWorkloadUpdate(selectors("uid:new")).Identities) != 1 {
		t.Fatal("updated entry's new selector does not match")
	}
	if _, ok := m.cache.SVIDs()["e6"]; ok {
		t.Fatal("SVID of deleted entry kept")
	}
}

func TestSyncFallbackAndFederation(t *testing.T) {
	ca := newTestCA(t)
	fedCA := newTestCA(t)
	e := workloadEntry("a", 1, "uid:1")
	e.FederatesWith = []string{"other.org", "missing.org"}
	fedBundle := fedCA.bundle()
	fedBundle.TrustDomain = "other.org"
	srv := &fakeServer{ca: ca, agentTTL: time.Hour, svidTTL: time.Hour, token: "t", noSync: true,
		entries: []*types.Entry{e}, federatedBundles: map[string]*types.Bundle{"other.org": fedBundle}}
	addr, _ := srv.serve(t, "127.0.0.1:0")
	m := newManager(t, agentSetup{dir: t.TempDir(), addr: addr, token: "t", ca: ca}, false)
	defer m.Close()
	ctx := context.Background()
	if err := m.attest(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.sync(ctx); err != nil {
		t.Fatalf("sync against a server without SyncAuthorizedEntries: %v", err)
	}
	u := m.FetchWorkloadUpdate(selectors("uid:1"))
	if len(u.Identities) != 1 {
		t.Fatal("no identity after GetAuthorizedEntries fallback")
	}
	if len(u.FederatedBundles) != 1 || u.FederatedBundles[mustTD("other.org")] == nil {
		t.Fatalf("federated bundles %v, want other.org only", u.FederatedBundles)
	}
}

// TestRenewAndEviction: the agent renews at half-life and keeps working
// with the new SVID; once banned, a join-token agent stops with
// ErrAgentEvicted.
func TestRenewAndEviction(t *testing.T) {
	ca := newTestCA(t)
	srv := &fakeServer{ca: ca, agentTTL: 3 * time.Second, svidTTL: time.Hour, token: "t", entries: []*types.Entry{workloadEntry("a", 1, "uid:1")}}
	addr, _ := srv.serve(t, "127.0.0.1:0")
	m := newManager(t, agentSetup{dir: t.TempDir(), addr: addr, token: "t", ca: ca}, false)
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	waitFor(t, "first SVID", func() bool { return m.AgentSVID() != nil })
	first := m.AgentSVID()
	waitFor(t, "renewal", func() bool { return m.AgentSVID() != first })
	second := m.AgentSVID()
	if second.Certificates[0].Equal(first.Certificates[0]) || publicKeyEqual(second.Certificates[0].PublicKey, first.PrivateKey.Public()) {
		t.Fatal("renewal did not install a new SVID with a new key")
	}
	// The renewed SVID is used: a workload entry added now gets an SVID.
	srv.mu.Lock()
	srv.entries = append(srv.entries, workloadEntry("b", 1, "uid:2"))
	srv.mu.Unlock()
	waitFor(t, "sync after renewal", func() bool { return len(m.FetchWorkloadUpdate(selectors("uid:2")).Identities) == 1 })

	srv.mu.Lock()
	srv.denyAgent = true
	srv.mu.Unlock()
	if err := <-done; !errors.Is(err, ErrAgentEvicted) {
		t.Fatalf("Run: %v, want ErrAgentEvicted", err)
	}
}

// TestEvictedAgentStops checks the error Run returns for a banned agent.
func TestEvictedAgentStops(t *testing.T) {
	ca := newTestCA(t)
	srv := &fakeServer{ca: ca, agentTTL: time.Hour, svidTTL: time.Hour, token: "t", denyAgent: true}
	addr, _ := srv.serve(t, "127.0.0.1:0")
	m := newManager(t, agentSetup{dir: t.TempDir(), addr: addr, token: "t", ca: ca}, false)
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Run(ctx); !errors.Is(err, ErrAgentEvicted) {
		t.Fatalf("Run: %v, want ErrAgentEvicted", err)
	}
}

func TestAttestationRejected(t *testing.T) {
	ca := newTestCA(t)
	srv := &fakeServer{ca: ca, agentTTL: time.Hour, svidTTL: time.Hour, token: "right"}
	addr, _ := srv.serve(t, "127.0.0.1:0")
	m := newManager(t, agentSetup{dir: t.TempDir(), addr: addr, token: "wrong", ca: ca}, false)
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Run(ctx); !errors.Is(err, ErrAttestationRejected) {
		t.Fatalf("Run: %v, want ErrAttestationRejected", err)
	}
	select {
	case <-m.Bootstrapped():
		t.Fatal("bootstrapped though attestation was rejected")
	default:
	}
}

func TestUntrustedServerIsRefused(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	srv := &fakeServer{ca: ca, agentTTL: time.Hour, svidTTL: time.Hour, token: "t"}
	addr, _ := srv.serve(t, "127.0.0.1:0")
	m := newManager(t, agentSetup{dir: t.TempDir(), addr: addr, token: "t", ca: other}, false)
	defer m.Close()
	if err := m.attest(context.Background()); err == nil {
		t.Fatal("attested to a server outside the trust bundle")
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.attestations != 0 {
		t.Fatal("token was sent to an untrusted server")
	}
}

func mustTD(name string) spiffeid.TrustDomain { return spiffeid.RequireTrustDomainFromString(name) }

// challengeAttestor answers the fake server's challenge (reverse it), as a
// TPM or x509pop attestor would prove possession of a key.
type challengeAttestor struct{ token string }

func (a challengeAttestor) Type() string { return "join_token" }
func (a challengeAttestor) AttestationData(context.Context, []byte) ([]byte, error) {
	return []byte(a.token), nil
}
func (a challengeAttestor) Respond(_ context.Context, c []byte) ([]byte, error) {
	return []byte(reverse(string(c))), nil
}

func TestAttestWithChallenge(t *testing.T) {
	ca := newTestCA(t)
	srv := &fakeServer{ca: ca, agentTTL: time.Hour, svidTTL: time.Hour, token: "t", challenge: []byte("nonce-123"), reattestable: true}
	addr, _ := srv.serve(t, "127.0.0.1:0")
	m := newManager(t, agentSetup{dir: t.TempDir(), addr: addr, token: "t", ca: ca}, false)
	defer m.Close()
	m.cfg.NodeAttestor = challengeAttestor{token: "t"}
	if err := m.attest(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !m.canReattest() {
		t.Fatal("reattestable flag from the server lost")
	}
	// A wrong answer is a rejection, not a retryable failure.
	m.cfg.NodeAttestor = jointoken.New("t")
	if err := m.attest(context.Background()); !errors.Is(err, ErrAttestationRejected) {
		t.Fatalf("attest with no answer: %v, want ErrAttestationRejected", err)
	}
}
