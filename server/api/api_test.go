package api_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/servertest"
	"github.com/spiffe-hw/spire-hw/sim/postgres"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var td = servertest.TrustDomain

func TestMain(m *testing.M) { os.Exit(postgres.Main(m)) }

// forEachEngine runs f against a server on SQLite and one on a real
// PostgreSQL server.
func forEachEngine(t *testing.T, f func(t *testing.T, opts servertest.Options)) {
	t.Run("sqlite", func(t *testing.T) { f(t, servertest.Options{}) })
	t.Run("postgres", func(t *testing.T) {
		dsn := postgres.Start(t)
		f(t, servertest.Options{DataStore: fmt.Sprintf("database_type = \"postgres\"\nconnection_string = %q", dsn)})
	})
}

func pid(path string) *types.SPIFFEID { return &types.SPIFFEID{TrustDomain: td.Name(), Path: path} }

func idOf(id spiffeid.ID) *types.SPIFFEID {
	return &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()}
}

func wantCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want code %v", err, code)
	}
}

func createEntry(t *testing.T, conn *grpc.ClientConn, e *types.Entry) *types.Entry {
	t.Helper()
	resp, err := entryv1.NewEntryClient(conn).BatchCreateEntry(context.Background(), &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{e}})
	if err != nil {
		t.Fatal(err)
	}
	r := resp.Results[0]
	if codes.Code(r.Status.Code) != codes.OK {
		t.Fatalf("create entry: %v", r.Status)
	}
	return r.Entry
}

func TestAdminRefusedOnTCP(t *testing.T) { forEachEngine(t, testAdminRefusedOnTCP) }

func testAdminRefusedOnTCP(t *testing.T, opts servertest.Options) {
	s := servertest.Start(t, opts)
	ctx := context.Background()
	agent := s.NewAgent(t)
	for name, conn := range map[string]*grpc.ClientConn{"no client certificate": s.Dial(t, nil), "agent SVID": agent.Conn} {
		t.Run(name, func(t *testing.T) {
			_, err := entryv1.NewEntryClient(conn).ListEntries(ctx, &entryv1.ListEntriesRequest{})
			wantCode(t, err, codes.PermissionDenied)
			_, err = agentv1.NewAgentClient(conn).CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 60})
			wantCode(t, err, codes.PermissionDenied)
			_, err = svidv1.NewSVIDClient(conn).MintJWTSVID(ctx, &svidv1.MintJWTSVIDRequest{Id: pid("/w"), Audience: []string{"a"}})
			wantCode(t, err, codes.PermissionDenied)
		})
	}
	// The public bundle is readable without a certificate; agent-only
	// methods are not.
	if _, err := bundlev1.NewBundleClient(s.Dial(t, nil)).GetBundle(ctx, &bundlev1.GetBundleRequest{}); err != nil {
		t.Fatalf("GetBundle without certificate: %v", err)
	}
	_, err := entryv1.NewEntryClient(s.Dial(t, nil)).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{})
	wantCode(t, err, codes.PermissionDenied)
	if _, err := entryv1.NewEntryClient(s.Admin(t)).ListEntries(ctx, &entryv1.ListEntriesRequest{}); err != nil {
		t.Fatalf("admin socket: %v", err)
	}
}

func TestAdminIDOverTCP(t *testing.T) {
	s := servertest.Start(t, servertest.Options{ServerExtra: `admin_ids = ["spiffe://example.org/admin"]`})
	ctx := context.Background()
	key, _ := servertest.NewCSR(t)
	csrTmpl := &x509.CertificateRequest{URIs: []*url.URL{{Scheme: "spiffe", Host: td.Name(), Path: "/admin"}}}
	csr, err := x509.CreateCertificateRequest(rand.Reader, csrTmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := svidv1.NewSVIDClient(s.Admin(t)).MintX509SVID(ctx, &svidv1.MintX509SVIDRequest{Csr: csr})
	if err != nil {
		t.Fatal(err)
	}
	svid, err := servertest.ParseSVID(resp.Svid.CertChain, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := entryv1.NewEntryClient(s.Dial(t, svid)).ListEntries(ctx, &entryv1.ListEntriesRequest{}); err != nil {
		t.Fatalf("admin ID over TCP: %v", err)
	}
}

func TestJoinTokenSingleUseUnderRace(t *testing.T) { forEachEngine(t, testJoinTokenSingleUseUnderRace) }

func testJoinTokenSingleUseUnderRace(t *testing.T, opts servertest.Options) {
	s := servertest.Start(t, opts)
	token := s.CreateToken(t)
	const racers = 8
	var wg sync.WaitGroup
	errs := make([]error, racers)
	conns := make([]*grpc.ClientConn, racers)
	for i := range conns {
		conns[i] = s.Dial(t, nil)
	}
	start := make(chan struct{})
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key, csr := servertest.NewCSR(t)
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, errs[i] = s.AttestJoinToken(ctx, conns[i], token, key, csr)
		}()
	}
	close(start)
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case status.Code(err) != codes.PermissionDenied:
			t.Errorf("loser got %v, want PermissionDenied", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d attestations succeeded with one token, want exactly 1 (errors: %v)", ok, errs)
	}
}

func TestJoinTokenRefusals(t *testing.T) { forEachEngine(t, testJoinTokenRefusals) }

func testJoinTokenRefusals(t *testing.T, opts servertest.Options) {
	s := servertest.Start(t, opts)
	ctx := context.Background()
	conn := s.Dial(t, nil)
	key, csr := servertest.NewCSR(t)
	_, err := s.AttestJoinToken(ctx, conn, "no-such-token", key, csr)
	wantCode(t, err, codes.PermissionDenied)

	_, err = agentv1.NewAgentClient(s.Admin(t)).CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 1, Token: "short-lived"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2100 * time.Millisecond)
	_, err = s.AttestJoinToken(ctx, conn, "short-lived", key, csr)
	wantCode(t, err, codes.PermissionDenied)

	token := s.CreateToken(t)
	bad := append([]byte(nil), csr...)
	bad[len(bad)-3] ^= 0xff // break the signature
	_, err = s.AttestJoinToken(ctx, conn, token, key, bad)
	wantCode(t, err, codes.InvalidArgument)
}

func TestAgentAuthorization(t *testing.T) { forEachEngine(t, testAgentAuthorization) }

func testAgentAuthorization(t *testing.T, opts servertest.Options) {
	s := servertest.Start(t, opts)
	ctx := context.Background()
	admin := s.Admin(t)
	a, b := s.NewAgent(t), s.NewAgent(t)
	entryA := createEntry(t, admin, &types.Entry{SpiffeId: pid("/workload-a"), ParentId: idOf(a.ID), Selectors: []*types.Selector{{Type: "unix", Value: "uid:1000"}}})
	child := createEntry(t, admin, &types.Entry{SpiffeId: pid("/workload-a/child"), ParentId: pid("/workload-a"), Selectors: []*types.Selector{{Type: "unix", Value: "uid:1001"}}, DnsNames: []string{"child.example.org"}})
	entryB := createEntry(t, admin, &types.Entry{SpiffeId: pid("/workload-b"), ParentId: idOf(b.ID), Selectors: []*types.Selector{{Type: "unix", Value: "uid:1000"}}})

	got, err := entryv1.NewEntryClient(a.Conn).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, e := range got.Entries {
		ids[e.Id] = true
	}
	if !ids[entryA.Id] || !ids[child.Id] || ids[entryB.Id] || len(ids) != 2 {
		t.Fatalf("agent A authorized for %v; want exactly %s and its child %s", ids, entryA.Id, child.Id)
	}

	svidClient := svidv1.NewSVIDClient(a.Conn)
	key, csr := servertest.NewCSR(t)
	resp, err := svidClient.BatchNewX509SVID(ctx, &svidv1.BatchNewX509SVIDRequest{Params: []*svidv1.NewX509SVIDParams{
		{EntryId: entryA.Id, Csr: csr},
		{EntryId: child.Id, Csr: csr},
		{EntryId: entryB.Id, Csr: csr},
		{EntryId: "does-not-exist", Csr: csr},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []codes.Code{codes.OK, codes.OK, codes.PermissionDenied, codes.PermissionDenied}
	bundle := s.Bundle(t)
	for i, r := range resp.Results {
		if codes.Code(r.Status.Code) != want[i] {
			t.Fatalf("result %d: %v, want %v", i, r.Status, want[i])
		}
		if want[i] != codes.OK {
			if r.Svid != nil {
				t.Fatalf("result %d: refused, yet an SVID was returned", i)
			}
			continue
		}
		svid, err := servertest.ParseSVID(r.Svid.CertChain, key)
		if err != nil {
			t.Fatal(err)
		}
		id, _, err := x509svid.Verify(svid.Certificates, bundle)
		if err != nil {
			t.Fatalf("result %d does not verify with go-spiffe: %v", i, err)
		}
		if id.String() != "spiffe://example.org"+[]string{"/workload-a", "/workload-a/child"}[i] {
			t.Fatalf("result %d: SVID for %s", i, id)
		}
	}
	if dns := mustLeaf(t, resp.Results[1].Svid.CertChain).DNSNames; len(dns) != 1 || dns[0] != "child.example.org" {
		t.Fatalf("child SVID DNS names = %v", dns)
	}

	// JWT-SVIDs follow the same rule.
	_, err = svidClient.NewJWTSVID(ctx, &svidv1.NewJWTSVIDRequest{EntryId: entryB.Id, Audience: []string{"x"}})
	wantCode(t, err, codes.PermissionDenied)
	jwtResp, err := svidClient.NewJWTSVID(ctx, &svidv1.NewJWTSVIDRequest{EntryId: entryA.Id, Audience: []string{"db"}})
	if err != nil {
		t.Fatal(err)
	}
	jb := jwtBundle(t, s)
	js, err := jwtsvid.ParseAndValidate(jwtResp.Svid.Token, jb, []string{"db"})
	if err != nil {
		t.Fatalf("JWT-SVID does not validate with go-spiffe: %v", err)
	}
	if js.ID.String() != "spiffe://example.org/workload-a" {
		t.Fatalf("JWT-SVID subject %s", js.ID)
	}
}

func mustLeaf(t *testing.T, chain [][]byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func jwtBundle(t *testing.T, s *servertest.Server) *jwtbundle.Bundle {
	t.Helper()
	b, err := bundlev1.NewBundleClient(s.Admin(t)).GetBundle(context.Background(), &bundlev1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	jb := jwtbundle.New(td)
	for _, k := range b.JwtAuthorities {
		pub, err := x509.ParsePKIXPublicKey(k.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		if err := jb.AddJWTAuthority(k.KeyId, pub); err != nil {
			t.Fatal(err)
		}
	}
	if len(b.JwtAuthorities) == 0 {
		t.Fatal("bundle has no JWT authorities")
	}
	return jb
}

func TestNodeAliasFromJoinToken(t *testing.T) { forEachEngine(t, testNodeAliasFromJoinToken) }

func testNodeAliasFromJoinToken(t *testing.T, opts servertest.Options) {
	s := servertest.Start(t, opts)
	ctx := context.Background()
	admin := s.Admin(t)
	tok, err := agentv1.NewAgentClient(admin).CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 600, AgentId: pid("/node/edge-1")})
	if err != nil {
		t.Fatal(err)
	}
	workload := createEntry(t, admin, &types.Entry{SpiffeId: pid("/edge-workload"), ParentId: pid("/node/edge-1"), Selectors: []*types.Selector{{Type: "unix", Value: "uid:0"}}})
	key, csr := servertest.NewCSR(t)
	svid, err := s.AttestJoinToken(ctx, s.Dial(t, nil), tok.Value, key, csr)
	if err != nil {
		t.Fatal(err)
	}
	got, err := entryv1.NewEntryClient(s.Dial(t, svid)).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range got.Entries {
		found = found || e.Id == workload.Id
	}
	if !found || len(got.Entries) != 2 {
		t.Fatalf("authorized entries %v: want the alias entry and %s", got.Entries, workload.Id)
	}
}

func TestBannedAndEvictedAgentsRefused(t *testing.T) {
	forEachEngine(t, testBannedAndEvictedAgentsRefused)
}

// testBannedAndEvictedAgentsRefused: after a ban or a delete, every agent
// call of that agent's SVID is refused as SPIRE's agent authorizer refuses
// it (PermissionDenied, "is banned" / "is not attested"), including the
// signing calls, while an agent left alone is still served the same calls.
func testBannedAndEvictedAgentsRefused(t *testing.T, opts servertest.Options) {
	s := servertest.Start(t, opts)
	ctx := context.Background()
	admin := s.Admin(t)
	agents := agentv1.NewAgentClient(admin)
	banned, evicted, control := s.NewAgent(t), s.NewAgent(t), s.NewAgent(t)
	entries := map[*servertest.Agent]*types.Entry{}
	for i, a := range []*servertest.Agent{banned, evicted, control} {
		entries[a] = createEntry(t, admin, &types.Entry{SpiffeId: pid(fmt.Sprintf("/workload-%d", i)), ParentId: idOf(a.ID), Selectors: []*types.Selector{{Type: "unix", Value: "uid:1000"}}})
	}
	for _, a := range []*servertest.Agent{banned, evicted, control} {
		if err := agentCalls(ctx, t, a, entries[a]); err != nil {
			t.Fatalf("before: %v", err)
		}
	}
	if _, err := agents.BanAgent(ctx, &agentv1.BanAgentRequest{Id: idOf(banned.ID)}); err != nil {
		t.Fatal(err)
	}
	if _, err := agents.DeleteAgent(ctx, &agentv1.DeleteAgentRequest{Id: idOf(evicted.ID)}); err != nil {
		t.Fatal(err)
	}
	// SPIRE's agents act on the reason in the details: shut down when
	// banned, re-attest when not attested.
	for _, tc := range []struct {
		name   string
		a      *servertest.Agent
		msg    string
		reason types.PermissionDeniedDetails_Reason
	}{
		{"banned", banned, "is banned", types.PermissionDeniedDetails_AGENT_BANNED},
		{"evicted", evicted, "is not attested", types.PermissionDeniedDetails_AGENT_NOT_ATTESTED},
	} {
		for _, call := range agentCallList(tc.a, entries[tc.a]) {
			err := call.do(ctx, t)
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), tc.msg) || deniedReason(err) != tc.reason {
				t.Errorf("%s agent, %s: %v (reason %v); want PermissionDenied, %q, reason %v", tc.name, call.name, err, deniedReason(err), tc.msg, tc.reason)
			}
		}
	}
	if err := agentCalls(ctx, t, control, entries[control]); err != nil {
		t.Fatalf("an agent neither banned nor evicted is refused: %v", err)
	}
	got, err := agents.GetAgent(ctx, &agentv1.GetAgentRequest{Id: idOf(banned.ID)})
	if err != nil || !got.Banned {
		t.Fatalf("GetAgent(banned) = %v, %v; want banned", got, err)
	}
}

// agentCall is one agent API call made with an agent's SVID; do returns
// the call's error, or an error of its own when the call succeeded with
// an answer that is not a credential for the agent's entry.
type agentCall struct {
	name string
	do   func(ctx context.Context, t *testing.T) error
}

// agentCallList is the calls an agent makes in its sync (entries, X.509-
// and JWT-SVIDs for entry) and at renewal.
func agentCallList(a *servertest.Agent, entry *types.Entry) []agentCall {
	return []agentCall{
		{"GetAuthorizedEntries", func(ctx context.Context, t *testing.T) error {
			resp, err := entryv1.NewEntryClient(a.Conn).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{})
			if err != nil {
				return err
			}
			for _, e := range resp.Entries {
				if e.Id == entry.Id {
					return nil
				}
			}
			return fmt.Errorf("GetAuthorizedEntries: %d entries, not %s", len(resp.Entries), entry.Id)
		}},
		{"BatchNewX509SVID", func(ctx context.Context, t *testing.T) error {
			key, csr := servertest.NewCSR(t)
			resp, err := svidv1.NewSVIDClient(a.Conn).BatchNewX509SVID(ctx, &svidv1.BatchNewX509SVIDRequest{Params: []*svidv1.NewX509SVIDParams{{EntryId: entry.Id, Csr: csr}}})
			if err != nil {
				return err
			}
			if len(resp.Results) != 1 || codes.Code(resp.Results[0].Status.GetCode()) != codes.OK {
				return fmt.Errorf("BatchNewX509SVID: results %v", resp.Results)
			}
			svid, err := servertest.ParseSVID(resp.Results[0].Svid.CertChain, key)
			if err != nil {
				return fmt.Errorf("BatchNewX509SVID: %w", err)
			}
			if svid.ID.String() != protoID(entry.SpiffeId) {
				return fmt.Errorf("BatchNewX509SVID: SVID for %s", svid.ID)
			}
			return nil
		}},
		{"NewJWTSVID", func(ctx context.Context, t *testing.T) error {
			resp, err := svidv1.NewSVIDClient(a.Conn).NewJWTSVID(ctx, &svidv1.NewJWTSVIDRequest{EntryId: entry.Id, Audience: []string{"db"}})
			if err != nil {
				return err
			}
			if resp.Svid.GetToken() == "" || protoID(resp.Svid.GetId()) != protoID(entry.SpiffeId) {
				return fmt.Errorf("NewJWTSVID: %v", resp.Svid)
			}
			return nil
		}},
		{"RenewAgent", func(ctx context.Context, t *testing.T) error {
			_, csr := servertest.NewCSR(t)
			_, err := agentv1.NewAgentClient(a.Conn).RenewAgent(ctx, &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: csr}})
			return err
		}},
	}
}

// agentCalls makes every call of agentCallList but RenewAgent (which
// would replace the agent's SVID) and returns the first failure.
func agentCalls(ctx context.Context, t *testing.T, a *servertest.Agent, entry *types.Entry) error {
	for _, c := range agentCallList(a, entry) {
		if c.name == "RenewAgent" {
			continue
		}
		if err := c.do(ctx, t); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	return nil
}

// deniedReason is the PermissionDeniedDetails reason err carries, or
// UNKNOWN without one.
func deniedReason(err error) types.PermissionDeniedDetails_Reason {
	for _, d := range status.Convert(err).Details() {
		if pd, ok := d.(*types.PermissionDeniedDetails); ok {
			return pd.Reason
		}
	}
	return types.PermissionDeniedDetails_UNKNOWN
}

func protoID(p *types.SPIFFEID) string { return "spiffe://" + p.GetTrustDomain() + p.GetPath() }

func TestRenewAgent(t *testing.T) { forEachEngine(t, testRenewAgent) }

func testRenewAgent(t *testing.T, opts servertest.Options) {
	s := servertest.Start(t, opts)
	ctx := context.Background()
	a := s.NewAgent(t)
	key, csr := servertest.NewCSR(t)
	resp, err := agentv1.NewAgentClient(a.Conn).RenewAgent(ctx, &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: csr}})
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := servertest.ParseSVID(resp.Svid.CertChain, key)
	if err != nil {
		t.Fatal(err)
	}
	if renewed.ID != a.ID {
		t.Fatalf("renewed SVID for %s, want %s", renewed.ID, a.ID)
	}
	// Until the new SVID is used, the old one still works.
	if _, err := entryv1.NewEntryClient(a.Conn).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{}); err != nil {
		t.Fatalf("old SVID before first use of new: %v", err)
	}
	if _, err := entryv1.NewEntryClient(s.Dial(t, renewed)).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{}); err != nil {
		t.Fatalf("renewed SVID: %v", err)
	}
	_, err = entryv1.NewEntryClient(s.Dial(t, a.SVID)).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{})
	wantCode(t, err, codes.PermissionDenied)
}

func TestEntryBadInput(t *testing.T) { forEachEngine(t, testEntryBadInput) }

func testEntryBadInput(t *testing.T, opts servertest.Options) {
	s := servertest.Start(t, opts)
	ctx := context.Background()
	client := entryv1.NewEntryClient(s.Admin(t))
	sel := []*types.Selector{{Type: "unix", Value: "uid:1"}}
	good := &types.Entry{SpiffeId: pid("/ok"), ParentId: pid("/spire/server"), Selectors: sel}
	createEntry(t, s.Admin(t), good)
	for _, tc := range []struct {
		name  string
		entry *types.Entry
		code  codes.Code
	}{
		{"invalid SPIFFE ID path", &types.Entry{SpiffeId: pid("no-slash"), ParentId: pid("/p"), Selectors: sel}, codes.InvalidArgument},
		{"ID outside trust domain", &types.Entry{SpiffeId: &types.SPIFFEID{TrustDomain: "evil.org", Path: "/w"}, ParentId: pid("/p"), Selectors: sel}, codes.InvalidArgument},
		{"parent outside trust domain", &types.Entry{SpiffeId: pid("/w"), ParentId: &types.SPIFFEID{TrustDomain: "evil.org", Path: "/p"}, Selectors: sel}, codes.InvalidArgument},
		{"missing parent", &types.Entry{SpiffeId: pid("/w"), Selectors: sel}, codes.InvalidArgument},
		{"selector without type", &types.Entry{SpiffeId: pid("/w"), ParentId: pid("/p"), Selectors: []*types.Selector{{Value: "uid:1"}}}, codes.InvalidArgument},
		{"selector without value", &types.Entry{SpiffeId: pid("/w"), ParentId: pid("/p"), Selectors: []*types.Selector{{Type: "unix"}}}, codes.InvalidArgument},
		{"no selectors", &types.Entry{SpiffeId: pid("/w"), ParentId: pid("/p")}, codes.InvalidArgument},
		{"negative TTL", &types.Entry{SpiffeId: pid("/w"), ParentId: pid("/p"), Selectors: sel, X509SvidTtl: -1}, codes.InvalidArgument},
		{"bad DNS name", &types.Entry{SpiffeId: pid("/w"), ParentId: pid("/p"), Selectors: sel, DnsNames: []string{"bad name"}}, codes.InvalidArgument},
		{"bad federates_with", &types.Entry{SpiffeId: pid("/w"), ParentId: pid("/p"), Selectors: sel, FederatesWith: []string{"Not A TD"}}, codes.InvalidArgument},
		{"duplicate", &types.Entry{SpiffeId: pid("/ok"), ParentId: pid("/spire/server"), Selectors: sel}, codes.AlreadyExists},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := client.BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{tc.entry}})
			if err != nil {
				t.Fatal(err)
			}
			if got := codes.Code(resp.Results[0].Status.Code); got != tc.code {
				t.Fatalf("status %v, want %v", resp.Results[0].Status, tc.code)
			}
			if resp.Results[0].Status.Message == "" {
				t.Fatal("refusal without a message")
			}
		})
	}
	n, err := client.CountEntries(ctx, &entryv1.CountEntriesRequest{})
	if err != nil || n.Count != 1 {
		t.Fatalf("after refusals: %v entries (err %v); want only the one good entry", n, err)
	}
	big := make([]*types.Entry, 1001)
	_, err = client.BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: big})
	wantCode(t, err, codes.InvalidArgument)
}

func TestMintX509SVIDBadCSR(t *testing.T) { forEachEngine(t, testMintX509SVIDBadCSR) }

func testMintX509SVIDBadCSR(t *testing.T, opts servertest.Options) {
	s := servertest.Start(t, opts)
	ctx := context.Background()
	client := svidv1.NewSVIDClient(s.Admin(t))
	key, _ := servertest.NewCSR(t)
	mk := func(uris ...string) []byte {
		var us []*url.URL
		for _, u := range uris {
			p, _ := url.Parse(u)
			us = append(us, p)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}, URIs: us}, key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	badSig := mk("spiffe://example.org/w")
	badSig[len(badSig)-2] ^= 0xff
	for _, tc := range []struct {
		name string
		csr  []byte
	}{
		{"two URI SANs", mk("spiffe://example.org/a", "spiffe://example.org/b")},
		{"no URI SAN", mk()},
		{"foreign trust domain", mk("spiffe://evil.org/w")},
		{"bad signature", badSig},
		{"garbage", []byte("not a csr")},
		{"oversized", make([]byte, 17<<10)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.MintX509SVID(ctx, &svidv1.MintX509SVIDRequest{Csr: tc.csr})
			wantCode(t, err, codes.InvalidArgument)
		})
	}
	resp, err := client.MintX509SVID(ctx, &svidv1.MintX509SVIDRequest{Csr: mk("spiffe://example.org/minted"), Ttl: 60})
	if err != nil {
		t.Fatal(err)
	}
	certs := make([]*x509.Certificate, 0, len(resp.Svid.CertChain))
	for _, der := range resp.Svid.CertChain {
		c, _ := x509.ParseCertificate(der)
		certs = append(certs, c)
	}
	if _, _, err := x509svid.Verify(certs, s.Bundle(t)); err != nil {
		t.Fatalf("minted SVID does not verify: %v", err)
	}
}

func TestSyncAuthorizedEntriesPaged(t *testing.T) { forEachEngine(t, testSyncAuthorizedEntriesPaged) }

func testSyncAuthorizedEntriesPaged(t *testing.T, opts servertest.Options) {
	s := servertest.Start(t, opts)
	ctx := context.Background()
	a := s.NewAgent(t)
	const n = 620 // more than one page
	var entries []*types.Entry
	for i := range n {
		entries = append(entries, &types.Entry{SpiffeId: pid("/w/" + itoa(i)), ParentId: idOf(a.ID), Selectors: []*types.Selector{{Type: "unix", Value: "uid:" + itoa(i)}}})
	}
	resp, err := entryv1.NewEntryClient(s.Admin(t)).BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: entries})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resp.Results {
		if codes.Code(r.Status.Code) != codes.OK {
			t.Fatal(r.Status)
		}
	}
	stream, err := entryv1.NewEntryClient(a.Conn).SyncAuthorizedEntries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&entryv1.SyncAuthorizedEntriesRequest{}); err != nil {
		t.Fatal(err)
	}
	var revs []string
	for {
		r, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Entries) != 0 {
			t.Fatal("large sync sent entries before revisions")
		}
		for _, rev := range r.EntryRevisions {
			revs = append(revs, rev.Id)
		}
		if !r.More {
			break
		}
	}
	if len(revs) != n {
		t.Fatalf("%d revisions, want %d", len(revs), n)
	}
	if err := stream.Send(&entryv1.SyncAuthorizedEntriesRequest{Ids: append(revs[:3:3], "not-authorized")}); err != nil {
		t.Fatal(err)
	}
	r, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Entries) != 3 || r.More {
		t.Fatalf("asked for 3 authorized IDs and one other, got %d entries (more=%v)", len(r.Entries), r.More)
	}
	stream.CloseSend()
}

func itoa(i int) string { return strconv.Itoa(i) }
