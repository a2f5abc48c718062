package delegatedidentity

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	delegatedidentityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/delegatedidentity/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe-hw/spire-hw/agent/peer"
	"github.com/spiffe-hw/spire-hw/agent/workloadapi"
	wltest "github.com/spiffe-hw/spire-hw/agent/workloadapi/workloadapitest"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/unix"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("example.org")
	fedTD    = spiffeid.RequireTrustDomainFromString("fed.test")
	delegate = spiffeid.RequireFromPath(td, "/delegate")
)

// manager is the agent manager's part the service uses, over a real
// cache; JWT-SVIDs are signed by the test CA's real JWT key.
type manager struct {
	t      testing.TB
	c      *cache.Cache
	ca     *wltest.CA
	mu     sync.Mutex
	jwtErr error
}

func (m *manager) SubscribeToCacheChanges(ctx context.Context, sels []*types.Selector) (cache.Subscription, error) {
	return m.c.Subscribe(ctx, sels), nil
}

func (m *manager) FetchJWTSVID(_ context.Context, e *types.Entry, aud []string) (*cache.JWTSVID, error) {
	m.mu.Lock()
	err := m.jwtErr
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	id, err := cache.EntryID(e)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	return &cache.JWTSVID{Token: wltest.SignJWT(m.t, m.ca.JWTKey, m.ca.JWTKID, id, aud, nil), IssuedAt: now, ExpiresAt: now.Add(5 * time.Minute)}, nil
}

// env is the service on a real Unix socket with the real unix attestor,
// a real cache and the test process as the caller.
type env struct {
	ca      *wltest.CA
	cache   *cache.Cache
	mgr     *manager
	client  delegatedidentityv1.DelegatedIdentityClient
	entries map[string]*types.Entry
	mu      sync.Mutex
	self    *types.Selector // the test binary's unix:path selector
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func pathSelector(t testing.TB, pid int) *types.Selector {
	t.Helper()
	exe, err := os.Readlink(filepathProc(pid))
	if err != nil {
		t.Fatal(err)
	}
	return &types.Selector{Type: "unix", Value: "path:" + exe}
}

func filepathProc(pid int) string { return filepath.Join("/proc", strconv.Itoa(pid), "exe") }

type envOpt func(*Config)

func newEnv(t *testing.T, opts ...envOpt) *env {
	t.Helper()
	ca := wltest.NewCA(t, td)
	c := cache.New(td, nil, nil)
	c.SetBundle(ca.Bundle())
	m := &manager{t: t, c: c, ca: ca}
	h := workloadapi.New(workloadapi.Config{
		Manager:     m2wl{m},
		Attestors:   []workloadapi.Attestor{unix.New(unix.Config{DiscoverWorkloadPath: true, WorkloadSizeLimit: -1})},
		TrustDomain: td,
		Log:         quietLog(),
	})
	cfg := Config{Manager: m, Cache: c, Attestor: h, AuthorizedDelegates: []spiffeid.ID{delegate}, Log: quietLog()}
	for _, o := range opts {
		o(&cfg)
	}
	svc := New(cfg)

	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := peer.NewCredentials(quietLog())
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(creds))
	Register(s, svc)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
		// A fixed window: the slow-reader test needs the client to stop
		// taking data when it stops reading.
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e := &env{ca: ca, cache: c, mgr: m, client: delegatedidentityv1.NewDelegatedIdentityClient(conn),
		entries: map[string]*types.Entry{}, self: pathSelector(t, os.Getpid())}
	return e
}

// m2wl lets the manager stand where the Workload API handler wants one;
// the handler is used only for its attestation here.
type m2wl struct{ m *manager }

func (w m2wl) SubscribeToCacheChanges(ctx context.Context, s []*types.Selector) (cache.Subscription, error) {
	return w.m.SubscribeToCacheChanges(ctx, s)
}
func (w m2wl) FetchWorkloadUpdate(s []*types.Selector) *cache.WorkloadUpdate {
	return w.m.c.FetchWorkloadUpdate(s)
}
func (w m2wl) FetchJWTSVID(ctx context.Context, e *types.Entry, aud []string) (*cache.JWTSVID, error) {
	return w.m.FetchJWTSVID(ctx, e, aud)
}

// add registers an entry for path with selectors and issues its SVID;
// mod may change the entry first.
func (e *env) add(t *testing.T, id, path string, sels []*types.Selector, mod ...func(*types.Entry)) cache.Identity {
	t.Helper()
	ident := e.ca.Issue(t, path)
	entry := ident.Entry
	entry.Id = id
	entry.Selectors = sels
	for _, f := range mod {
		f(entry)
	}
	e.mu.Lock()
	e.entries[id] = entry
	all := make([]*types.Entry, 0, len(e.entries))
	for _, en := range e.entries {
		all = append(all, en)
	}
	e.mu.Unlock()
	e.cache.SetEntries(all)
	e.cache.SetSVIDs(map[string]cache.Identity{id: ident})
	return ident
}

func (e *env) remove(id string) {
	e.mu.Lock()
	delete(e.entries, id)
	all := make([]*types.Entry, 0, len(e.entries))
	for _, en := range e.entries {
		all = append(all, en)
	}
	e.mu.Unlock()
	e.cache.SetEntries(all)
}

// authorize gives the test process the authorized delegate's entry.
func (e *env) authorize(t *testing.T) {
	e.add(t, "delegate", delegate.Path(), []*types.Selector{e.self})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantStatus(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code || (msg != "" && st.Message() != msg) {
		t.Fatalf("got %v, want %v %q", err, code, msg)
	}
}

var workloadSel = &types.Selector{Type: "k8s", Value: "ns:demo"}

func TestAuthorization(t *testing.T) {
	e := newEnv(t)
	e.add(t, "workload", "/workload", []*types.Selector{workloadSel})
	calls := map[string]func(ctx context.Context) error{
		"SubscribeToX509SVIDs": func(ctx context.Context) error {
			s, err := e.client.SubscribeToX509SVIDs(ctx, &delegatedidentityv1.SubscribeToX509SVIDsRequest{Selectors: []*types.Selector{workloadSel}})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		},
		"SubscribeToX509Bundles": func(ctx context.Context) error {
			s, err := e.client.SubscribeToX509Bundles(ctx, &delegatedidentityv1.SubscribeToX509BundlesRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		},
		"SubscribeToJWTBundles": func(ctx context.Context) error {
			s, err := e.client.SubscribeToJWTBundles(ctx, &delegatedidentityv1.SubscribeToJWTBundlesRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		},
		"FetchJWTSVIDs": func(ctx context.Context) error {
			_, err := e.client.FetchJWTSVIDs(ctx, &delegatedidentityv1.FetchJWTSVIDsRequest{Audience: []string{"aud"}, Selectors: []*types.Selector{workloadSel}})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			// No entry matches the caller.
			e.remove("delegate")
			e.remove("other")
			wantStatus(t, call(ctxT(t)), codes.PermissionDenied, "no identity issued")
			// An entry matches, with an ID that is not a delegate's.
			e.add(t, "other", "/not-a-delegate", []*types.Selector{e.self})
			wantStatus(t, call(ctxT(t)), codes.PermissionDenied, "caller not configured as an authorized delegate")
			// One of its entries is a delegate's.
			e.authorize(t)
			if err := call(ctxT(t)); err != nil {
				t.Fatalf("authorized delegate: %v", err)
			}
		})
	}
}

func recvX509(t *testing.T, s delegatedidentityv1.DelegatedIdentity_SubscribeToX509SVIDsClient) *delegatedidentityv1.SubscribeToX509SVIDsResponse {
	t.Helper()
	r, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func svidIDs(r *delegatedidentityv1.SubscribeToX509SVIDsResponse) []string {
	var out []string
	for _, s := range r.X509Svids {
		out = append(out, "spiffe://"+s.X509Svid.Id.TrustDomain+s.X509Svid.Id.Path)
	}
	return out
}

func TestSubscribeToX509SVIDsBySelectors(t *testing.T) {
	e := newEnv(t)
	e.authorize(t)
	ident := e.add(t, "workload", "/workload", []*types.Selector{workloadSel}, func(en *types.Entry) {
		en.Hint = "external"
		en.FederatesWith = []string{fedTD.Name()}
	})
	e.add(t, "admin", "/admin", []*types.Selector{workloadSel}, func(en *types.Entry) { en.Admin = true })
	e.add(t, "downstream", "/downstream", []*types.Selector{workloadSel}, func(en *types.Entry) { en.Downstream = true })
	fedCA := wltest.NewCA(t, fedTD)
	e.cache.SetFederatedBundles(map[spiffeid.TrustDomain]*spiffebundle.Bundle{fedTD: fedCA.Bundle()})

	ctx := ctxT(t)
	s, err := e.client.SubscribeToX509SVIDs(ctx, &delegatedidentityv1.SubscribeToX509SVIDsRequest{Selectors: []*types.Selector{workloadSel}})
	if err != nil {
		t.Fatal(err)
	}
	r := recvX509(t, s)
	if got := svidIDs(r); len(got) != 1 || got[0] != "spiffe://example.org/workload" {
		t.Fatalf("SVIDs = %v, want the workload's only (no admin, no downstream)", got)
	}
	sv := r.X509Svids[0]
	if sv.X509Svid.Hint != "external" || sv.X509Svid.ExpiresAt != ident.SVID.NotAfter().Unix() ||
		len(sv.X509Svid.CertChain) != 1 || string(sv.X509Svid.CertChain[0]) != string(ident.SVID.Leaf()) {
		t.Fatalf("SVID = %+v, want the issued one with its hint", sv.X509Svid)
	}
	key, err := x509.ParsePKCS8PrivateKey(sv.X509SvidKey)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ident.SVID.Signer()
	if err != nil {
		t.Fatal(err)
	}
	if !signer.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(key.(crypto.Signer).Public()) {
		t.Fatal("key does not match the SVID's")
	}
	// What SPIRE's agent sends: the key as Go marshals it to PKCS#8.
	if want, err := x509.MarshalPKCS8PrivateKey(signer); err != nil || string(want) != string(sv.X509SvidKey) {
		t.Fatalf("key is not the key's PKCS#8 (%v)", err)
	}
	if len(r.FederatesWith) != 1 || r.FederatesWith[0] != "spiffe://fed.test" {
		t.Fatalf("FederatesWith = %v", r.FederatesWith)
	}

	// Rotation is pushed.
	next := e.add(t, "workload", "/workload", []*types.Selector{workloadSel}, func(en *types.Entry) {
		en.Hint = "external"
		en.FederatesWith = []string{fedTD.Name()}
	})
	r = recvX509(t, s)
	if len(r.X509Svids) != 1 || string(r.X509Svids[0].X509Svid.CertChain[0]) != string(next.SVID.Leaf()) {
		t.Fatal("rotated SVID not pushed")
	}
	// The entry goes: an empty update, as SPIRE sends.
	e.remove("workload")
	if r = recvX509(t, s); len(r.X509Svids) != 0 || len(r.FederatesWith) != 0 {
		t.Fatalf("after removal: %v", svidIDs(r))
	}
	// The delegate's own entry goes: the stream ends.
	e.remove("delegate")
	e.add(t, "workload", "/workload", []*types.Selector{workloadSel})
	_, err = s.Recv()
	wantStatus(t, err, codes.PermissionDenied, "no identity issued")
}

// startSleeper runs a child process that waits until killed; the unix
// attestor names it by its own executable.
func startSleeper(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// Wait until the child has exec'd sleep: until then /proc names the
	// test binary.
	deadline := time.Now().Add(10 * time.Second)
	for {
		exe, err := os.Readlink(filepathProc(cmd.Process.Pid))
		if err == nil && filepath.Base(exe) != filepath.Base(os.Args[0]) {
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("child never exec'd sleep (exe %q, %v)", exe, err)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSubscribeToX509SVIDsByPID(t *testing.T) {
	e := newEnv(t)
	e.authorize(t)
	cmd := startSleeper(t)
	e.add(t, "workload", "/workload", []*types.Selector{pathSelector(t, cmd.Process.Pid)})
	// An entry only the delegate matches is not the workload's.
	e.add(t, "mine", "/mine", []*types.Selector{e.self})

	ctx := ctxT(t)
	s, err := e.client.SubscribeToX509SVIDs(ctx, &delegatedidentityv1.SubscribeToX509SVIDsRequest{Pid: int32(cmd.Process.Pid)})
	if err != nil {
		t.Fatal(err)
	}
	if got := svidIDs(recvX509(t, s)); len(got) != 1 || got[0] != "spiffe://example.org/workload" {
		t.Fatalf("SVIDs by PID = %v, want the sleeper's", got)
	}
	// The process exits: the stream ends, its PID may soon be another's.
	cmd.Process.Kill()
	cmd.Wait()
	_, err = s.Recv()
	wantStatus(t, err, codes.NotFound, "process with PID "+strconv.Itoa(cmd.Process.Pid)+" exited")
}

func TestExitedPIDRefused(t *testing.T) {
	e := newEnv(t)
	e.authorize(t)
	cmd := startSleeper(t)
	e.add(t, "workload", "/workload", []*types.Selector{pathSelector(t, cmd.Process.Pid)})
	pid := int32(cmd.Process.Pid)
	cmd.Process.Kill()
	cmd.Wait()
	want := "no process with PID " + strconv.Itoa(int(pid))

	s, err := e.client.SubscribeToX509SVIDs(ctxT(t), &delegatedidentityv1.SubscribeToX509SVIDsRequest{Pid: pid})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Recv()
	wantStatus(t, err, codes.NotFound, want)
	_, err = e.client.FetchJWTSVIDs(ctxT(t), &delegatedidentityv1.FetchJWTSVIDsRequest{Audience: []string{"a"}, Pid: pid})
	wantStatus(t, err, codes.NotFound, want)
}

func TestRequestValidation(t *testing.T) {
	e := newEnv(t)
	e.authorize(t)
	long := strings.Repeat("x", MaxSelectorLen)
	many := make([]*types.Selector, MaxSelectors+1)
	for i := range many {
		many[i] = &types.Selector{Type: "t", Value: strconv.Itoa(i)}
	}
	for _, tc := range []struct {
		name string
		pid  int32
		sels []*types.Selector
		msg  string
	}{
		{"both", 447, []*types.Selector{workloadSel}, errPIDOrSelectors},
		{"neither", 0, []*types.Selector{}, errPIDOrSelectors},
		{"negative pid", -1, nil, "invalid pid -1: must be positive"},
		{"missing type", 0, []*types.Selector{{Value: "foo"}}, "could not parse provided selectors"},
		{"missing value", 0, []*types.Selector{{Type: "sa"}}, "could not parse provided selectors"},
		{"type with colon", 0, []*types.Selector{{Type: "sa:bar", Value: "boo"}}, "could not parse provided selectors"},
		{"too long", 0, []*types.Selector{{Type: "t", Value: long}}, "could not parse provided selectors"},
		{"too many", 0, many, "too many selectors: 257, at most 256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := e.client.SubscribeToX509SVIDs(ctxT(t), &delegatedidentityv1.SubscribeToX509SVIDsRequest{Pid: tc.pid, Selectors: tc.sels})
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Recv()
			wantStatus(t, err, codes.InvalidArgument, tc.msg)
			_, err = e.client.FetchJWTSVIDs(ctxT(t), &delegatedidentityv1.FetchJWTSVIDsRequest{Audience: []string{"a"}, Pid: tc.pid, Selectors: tc.sels})
			wantStatus(t, err, codes.InvalidArgument, tc.msg)
		})
	}
	// The audience is checked first, before the caller, as SPIRE does.
	e.remove("delegate")
	_, err := e.client.FetchJWTSVIDs(ctxT(t), &delegatedidentityv1.FetchJWTSVIDsRequest{Selectors: []*types.Selector{workloadSel}})
	wantStatus(t, err, codes.InvalidArgument, "audience must be specified")
	_, err = e.client.FetchJWTSVIDs(ctxT(t), &delegatedidentityv1.FetchJWTSVIDsRequest{Audience: make([]string, MaxAudiences+1), Selectors: []*types.Selector{workloadSel}})
	wantStatus(t, err, codes.InvalidArgument, "too many audiences: 33, at most 32")
}

func TestFetchJWTSVIDs(t *testing.T) {
	e := newEnv(t)
	e.authorize(t)
	e.add(t, "workload", "/workload", []*types.Selector{workloadSel}, func(en *types.Entry) { en.Hint = "internal" })
	set := jwtbundle.NewSet(e.ca.Bundle().JWTBundle())

	resp, err := e.client.FetchJWTSVIDs(ctxT(t), &delegatedidentityv1.FetchJWTSVIDsRequest{Audience: []string{"aud1", "aud2"}, Selectors: []*types.Selector{workloadSel}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Svids) != 1 {
		t.Fatalf("got %d JWT-SVIDs, want 1", len(resp.Svids))
	}
	got := resp.Svids[0]
	svid, err := jwtsvid.ParseAndValidate(got.Token, set, []string{"aud2"})
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID.String() != "spiffe://example.org/workload" || got.Id.Path != "/workload" || got.Id.TrustDomain != "example.org" ||
		got.Hint != "internal" || got.ExpiresAt <= got.IssuedAt {
		t.Fatalf("JWT-SVID = %+v (subject %s)", got, svid.ID)
	}

	// Selectors no entry matches.
	_, err = e.client.FetchJWTSVIDs(ctxT(t), &delegatedidentityv1.FetchJWTSVIDsRequest{Audience: []string{"a"}, Selectors: []*types.Selector{{Type: "k8s", Value: "ns:other"}}})
	wantStatus(t, err, codes.PermissionDenied, "no identity issued")

	// The manager cannot mint.
	e.mgr.mu.Lock()
	e.mgr.jwtErr = errors.New("ohno")
	e.mgr.mu.Unlock()
	_, err = e.client.FetchJWTSVIDs(ctxT(t), &delegatedidentityv1.FetchJWTSVIDsRequest{Audience: []string{"a"}, Selectors: []*types.Selector{workloadSel}})
	wantStatus(t, err, codes.Unavailable, "could not fetch JWT-SVID: ohno")
}

func TestFetchJWTSVIDsByPID(t *testing.T) {
	e := newEnv(t)
	e.authorize(t)
	cmd := startSleeper(t)
	e.add(t, "workload", "/workload", []*types.Selector{pathSelector(t, cmd.Process.Pid)})
	resp, err := e.client.FetchJWTSVIDs(ctxT(t), &delegatedidentityv1.FetchJWTSVIDsRequest{Audience: []string{"a"}, Pid: int32(cmd.Process.Pid)})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Svids) != 1 || resp.Svids[0].Id.Path != "/workload" {
		t.Fatalf("JWT-SVIDs by PID = %v", resp.Svids)
	}
}

func TestBundles(t *testing.T) {
	e := newEnv(t)
	e.authorize(t)
	ctx := ctxT(t)
	xs, err := e.client.SubscribeToX509Bundles(ctx, &delegatedidentityv1.SubscribeToX509BundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	js, err := e.client.SubscribeToJWTBundles(ctx, &delegatedidentityv1.SubscribeToJWTBundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	checkX509 := func(want map[spiffeid.TrustDomain]*wltest.CA) {
		t.Helper()
		r, err := xs.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(r.CaCertificates) != len(want) {
			t.Fatalf("X.509 bundles for %d trust domains, want %d", len(r.CaCertificates), len(want))
		}
		for td, ca := range want {
			if string(r.CaCertificates[td.IDString()]) != string(ca.Cert.Raw) {
				t.Fatalf("X.509 bundle of %s is not its CA", td)
			}
		}
	}
	checkJWT := func(want map[spiffeid.TrustDomain]*wltest.CA) {
		t.Helper()
		r, err := js.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Bundles) != len(want) {
			t.Fatalf("JWT bundles for %d trust domains, want %d", len(r.Bundles), len(want))
		}
		for td, ca := range want {
			raw := r.Bundles[td.IDString()]
			b, err := jwtbundle.Parse(td, raw)
			if err != nil {
				t.Fatalf("JWT bundle of %s: %v", td, err)
			}
			if !b.Equal(ca.Bundle().JWTBundle()) {
				t.Fatalf("JWT bundle of %s is not its CA's", td)
			}
			if !strings.HasPrefix(string(raw), "{\n    \"keys\": [") || strings.Contains(string(raw), "spiffe_") || strings.Contains(string(raw), `"use"`) {
				t.Fatalf("JWKS not in SPIRE's standard form:\n%s", raw)
			}
		}
	}
	checkX509(map[spiffeid.TrustDomain]*wltest.CA{td: e.ca})
	checkJWT(map[spiffeid.TrustDomain]*wltest.CA{td: e.ca})

	fed := wltest.NewCA(t, fedTD)
	e.cache.SetFederatedBundles(map[spiffeid.TrustDomain]*spiffebundle.Bundle{fedTD: fed.Bundle()})
	checkX509(map[spiffeid.TrustDomain]*wltest.CA{td: e.ca, fedTD: fed})
	checkJWT(map[spiffeid.TrustDomain]*wltest.CA{td: e.ca, fedTD: fed})

	// The delegate loses its entry: the next change ends both streams.
	e.remove("delegate")
	e.cache.SetFederatedBundles(nil)
	_, err = xs.Recv()
	wantStatus(t, err, codes.PermissionDenied, "no identity issued")
	_, err = js.Recv()
	wantStatus(t, err, codes.PermissionDenied, "no identity issued")
}

// A delegate that stops reading holds its stream in gRPC's send window;
// the agent does not queue the updates it has not taken: when it reads
// again it gets far fewer messages than there were rotations, the last
// being the latest SVID.
func TestSlowReaderDoesNotQueue(t *testing.T) {
	e := newEnv(t)
	e.authorize(t)
	e.add(t, "workload", "/workload", []*types.Selector{workloadSel})
	ctx := ctxT(t)
	s, err := e.client.SubscribeToX509SVIDs(ctx, &delegatedidentityv1.SubscribeToX509SVIDsRequest{Selectors: []*types.Selector{workloadSel}})
	if err != nil {
		t.Fatal(err)
	}
	recvX509(t, s)
	const rotations = 600
	var last cache.Identity
	for range rotations {
		last = e.add(t, "workload", "/workload", []*types.Selector{workloadSel})
	}
	n := 0
	for {
		r := recvX509(t, s)
		n++
		if len(r.X509Svids) == 1 && string(r.X509Svids[0].X509Svid.CertChain[0]) == string(last.SVID.Leaf()) {
			break
		}
		if n > rotations {
			t.Fatal("latest SVID never arrived")
		}
	}
	// Each message is about 1 KiB, so the windows hold a couple of
	// hundred at most; with every update queued all 600 would come.
	if n >= rotations*2/3 {
		t.Fatalf("got %d messages for %d rotations: updates were queued", n, rotations)
	}
	t.Logf("%d messages for %d rotations", n, rotations)
}

func TestStreamCapPerUID(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxStreamsPerUID = 2 })
	e.authorize(t)
	ctx, cancel := context.WithCancel(ctxT(t))
	for range 2 {
		s, err := e.client.SubscribeToX509Bundles(ctx, &delegatedidentityv1.SubscribeToX509BundlesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	s, err := e.client.SubscribeToJWTBundles(ctxT(t), &delegatedidentityv1.SubscribeToJWTBundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Recv()
	wantStatus(t, err, codes.ResourceExhausted, "")
	// Closing the streams frees their slots.
	cancel()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := e.client.SubscribeToJWTBundles(ctxT(t), &delegatedidentityv1.SubscribeToJWTBundlesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err = s.Recv(); err == nil {
			break
		}
		if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("after closing the streams: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
