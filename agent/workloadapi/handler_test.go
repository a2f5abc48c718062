package workloadapi

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	wltest "github.com/spiffe-hw/spire-hw/agent/workloadapi/workloadapitest"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/unix"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// selfSelectors are the unix selectors of this test process, computed
// independently of the attestor (os.Getuid, os.Executable, sha256 of it).
func selfSelectors(t *testing.T) (uid, gid, path, sum *types.Selector) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	mk := func(v string) *types.Selector { return &types.Selector{Type: "unix", Value: v} }
	return mk("uid:" + strconv.Itoa(os.Geteuid())), mk("gid:" + strconv.Itoa(os.Getegid())),
		mk("path:" + exe), mk("sha256:" + hex.EncodeToString(h[:]))
}

type env struct {
	ca     *wltest.CA
	mgr    *wltest.Manager
	socket string
	addr   string
}

func newEnv(t *testing.T, extra ...Attestor) *env {
	t.Helper()
	ca := wltest.NewCA(t, td)
	mgr := wltest.NewManager(t, ca)
	h := New(Config{
		Manager:     mgr,
		Attestors:   append([]Attestor{unix.New(unix.Config{DiscoverWorkloadPath: true})}, extra...),
		TrustDomain: td,
		Log:         quietLog(),
	})
	sock := startServer(t, h)
	return &env{ca: ca, mgr: mgr, socket: sock, addr: "unix://" + sock}
}

func (e *env) client(t *testing.T) *workloadapi.Client {
	t.Helper()
	c, err := workloadapi.New(context.Background(), workloadapi.WithAddr(e.addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestSecurityHeaderRequired(t *testing.T) {
	e := newEnv(t)
	conn, err := grpc.NewClient("unix://"+e.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := workload.NewSpiffeWorkloadAPIClient(conn)
	ctx := ctxT(t, 10*time.Second)

	check := func(name string, err error) {
		t.Helper()
		if status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() != "security header missing from request" {
			t.Errorf("%s without header: got %v, want InvalidArgument \"security header missing from request\"", name, err)
		}
	}
	stream, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	check("FetchX509SVID", err)
	_, err = c.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"a"}})
	check("FetchJWTSVID", err)
	_, err = c.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "a", Svid: "x"})
	check("ValidateJWTSVID", err)

	// A wrong value is as good as none.
	bad := metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "false")
	_, err = c.FetchJWTSVID(bad, &workload.JWTSVIDRequest{Audience: []string{"a"}})
	check("FetchJWTSVID with header false", err)
}

// recorder is an X509ContextWatcher.
type recorder struct {
	mu   sync.Mutex
	ch   chan *workloadapi.X509Context
	errs []error
}

func newRecorder() *recorder                                       { return &recorder{ch: make(chan *workloadapi.X509Context, 16)} }
func (r *recorder) OnX509ContextUpdate(c *workloadapi.X509Context) { r.ch <- c }
func (r *recorder) OnX509ContextWatchError(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

func (r *recorder) next(t *testing.T, d time.Duration) *workloadapi.X509Context {
	t.Helper()
	select {
	case c := <-r.ch:
		return c
	case <-time.After(d):
		t.Fatalf("no X509Context within %s", d)
		return nil
	}
}

func verifySVID(t *testing.T, svid *x509svid.SVID, bundles x509bundle.Source) {
	t.Helper()
	if _, _, err := x509svid.Verify(svid.Certificates, bundles); err != nil {
		t.Fatalf("SVID %s does not verify: %v", svid.ID, err)
	}
}

func TestNoEntryThenEntryAppears(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	ctx := ctxT(t, 30*time.Second)

	_, err := c.FetchX509SVID(ctx)
	if status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != "no identity issued" {
		t.Fatalf("FetchX509SVID with no entry: got %v, want PermissionDenied \"no identity issued\"", err)
	}
	_, err = c.FetchX509Bundles(ctx)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("FetchX509Bundles with no entry: got %v, want PermissionDenied (as SPIRE)", err)
	}
	_, err = c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "x"})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("FetchJWTSVID with no entry: got %v, want PermissionDenied", err)
	}

	rec := newRecorder()
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.WatchX509Context(wctx, rec) }()
	defer func() { cancel(); <-done }()

	// Let the watcher hit PermissionDenied at least once.
	deadline := time.Now().Add(5 * time.Second)
	for {
		rec.mu.Lock()
		n := len(rec.errs)
		rec.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("watcher never reported the PermissionDenied")
		}
		time.Sleep(20 * time.Millisecond)
	}

	uid, _, _, _ := selfSelectors(t)
	e.mgr.Set(e.ca.Issue(t, "/workload"), uid)

	x := rec.next(t, 10*time.Second)
	svid := x.DefaultSVID()
	if svid.ID.String() != "spiffe://example.org/workload" {
		t.Fatalf("got SVID %s", svid.ID)
	}
	verifySVID(t, svid, x.Bundles)
}

func TestUnixSelectorsMatchTestProcess(t *testing.T) {
	uid, gid, path, sum := selfSelectors(t)
	wrongSum := &types.Selector{Type: "unix", Value: "sha256:" + hex.EncodeToString(make([]byte, 32))}
	otherUID := &types.Selector{Type: "unix", Value: "uid:" + strconv.Itoa(os.Geteuid()+4242)}

	e := newEnv(t)
	e.mgr.Set(e.ca.Issue(t, "/all-four"), uid, gid, path, sum)
	e.mgr.Set(e.ca.Issue(t, "/wrong-hash"), uid, gid, path, wrongSum)
	e.mgr.Set(e.ca.Issue(t, "/other-user"), otherUID)

	x, err := e.client(t).FetchX509Context(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(x.SVIDs) != 1 || x.SVIDs[0].ID.Path() != "/all-four" {
		var got []string
		for _, s := range x.SVIDs {
			got = append(got, s.ID.String())
		}
		t.Fatalf("got SVIDs %v, want only /all-four", got)
	}
	verifySVID(t, x.SVIDs[0], x.Bundles)
}

func TestRotationIsPushed(t *testing.T) {
	uid, _, _, _ := selfSelectors(t)
	e := newEnv(t)
	first := e.ca.Issue(t, "/rotating")
	e.mgr.Set(first, uid)

	c := e.client(t)
	rec := newRecorder()
	ctx, cancel := context.WithCancel(ctxT(t, 20*time.Second))
	done := make(chan error, 1)
	go func() { done <- c.WatchX509Context(ctx, rec) }()
	defer func() { cancel(); <-done }()

	got := rec.next(t, 10*time.Second).DefaultSVID()
	if !bytes.Equal(got.Certificates[0].Raw, first.SVID.Leaf()) {
		t.Fatalf("first update has serial %v, want the first SVID", got.Certificates[0].SerialNumber)
	}

	second := e.ca.Issue(t, "/rotating")
	e.mgr.Set(second, uid)
	x := rec.next(t, 10*time.Second)
	got = x.DefaultSVID()
	if !bytes.Equal(got.Certificates[0].Raw, second.SVID.Leaf()) {
		t.Fatalf("rotated update has serial %v, want the rotated SVID", got.Certificates[0].SerialNumber)
	}
	verifySVID(t, got, x.Bundles)

	// Same content again: nothing is sent.
	e.mgr.Set(second, uid)
	select {
	case x := <-rec.ch:
		t.Fatalf("unchanged state was sent again (serial %v)", x.DefaultSVID().Certificates[0].SerialNumber)
	case <-time.After(300 * time.Millisecond):
	}
}

func TestJWT(t *testing.T) {
	uid, _, _, _ := selfSelectors(t)
	e := newEnv(t)
	e.mgr.Set(e.ca.Issue(t, "/a"), uid)
	e.mgr.Set(e.ca.Issue(t, "/b"), uid)
	c := e.client(t)
	ctx := ctxT(t, 15*time.Second)

	svids, err := c.FetchJWTSVIDs(ctx, jwtsvid.Params{Audience: "aud1", ExtraAudiences: []string{"aud2"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(svids) != 2 {
		t.Fatalf("got %d JWT-SVIDs, want 2", len(svids))
	}
	var twoAud *jwtsvid.SVID
	for _, s := range svids {
		if s.ID.Path() == "/b" {
			twoAud = s
		}
	}
	if twoAud == nil {
		t.Fatal("no JWT-SVID for /b")
	}
	one, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "aud1", Subject: spiffeid.RequireFromString("spiffe://example.org/b")})
	if err != nil {
		t.Fatal(err)
	}
	if one.ID.Path() != "/b" {
		t.Fatalf("asked for /b, got %s", one.ID)
	}

	// The JWT bundle served must verify the token.
	bundles, err := c.FetchJWTBundles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(one.Marshal(), bundles, []string{"aud1"}); err != nil {
		t.Fatalf("token does not verify against served JWT bundle: %v", err)
	}

	// Raw client for the InvalidArgument cases go-spiffe checks itself.
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw := workload.NewSpiffeWorkloadAPIClient(conn)
	hctx := metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	if _, err := raw.FetchJWTSVID(hctx, &workload.JWTSVIDRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("FetchJWTSVID without audience: got %v, want InvalidArgument", err)
	}
	if _, err := raw.ValidateJWTSVID(hctx, &workload.ValidateJWTSVIDRequest{Svid: one.Marshal()}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("ValidateJWTSVID without audience: got %v, want InvalidArgument", err)
	}

	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sub := spiffeid.RequireFromString("spiffe://example.org/a")
	foreignTD := spiffeid.RequireFromString("spiffe://other.org/x")
	tests := []struct {
		name    string
		token   string
		aud     string
		wantErr bool
	}{
		{name: "good token", token: one.Marshal(), aud: "aud1"},
		{name: "good token second audience", token: twoAud.Marshal(), aud: "aud2"},
		{name: "another audience", token: one.Marshal(), aud: "someone-else", wantErr: true},
		{name: "signed by another key with our kid", token: wltest.SignJWT(t, otherKey, e.ca.JWTKID, sub, []string{"aud1"}, nil), aud: "aud1", wantErr: true},
		{name: "signed by another key, unknown kid", token: wltest.SignJWT(t, otherKey, "nope", sub, []string{"aud1"}, nil), aud: "aud1", wantErr: true},
		{name: "trust domain without bundle", token: wltest.SignJWT(t, e.ca.JWTKey, e.ca.JWTKID, foreignTD, []string{"aud1"}, nil), aud: "aud1", wantErr: true},
		{name: "garbage", token: "not.a.jwt", aud: "aud1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.ValidateJWTSVID(ctx, tt.token, tt.aud)
			if tt.wantErr {
				if status.Code(err) != codes.InvalidArgument {
					t.Fatalf("got %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ID.Path() != "/b" {
				t.Fatalf("validated subject %s, want /b", got.ID)
			}
		})
	}

	// Claims come back as a struct with aud as a list.
	resp, err := raw.ValidateJWTSVID(hctx, &workload.ValidateJWTSVIDRequest{Audience: "aud1", Svid: wltest.SignJWT(t, e.ca.JWTKey, e.ca.JWTKID, sub, []string{"aud1"}, map[string]any{"custom": "v"})})
	if err != nil {
		t.Fatal(err)
	}
	if resp.SpiffeId != sub.String() || resp.Claims.Fields["custom"].GetStringValue() != "v" ||
		len(resp.Claims.Fields["aud"].GetListValue().GetValues()) != 1 {
		t.Fatalf("unexpected response %v", resp)
	}
}

func TestFetchX509Bundles(t *testing.T) {
	uid, _, _, _ := selfSelectors(t)
	e := newEnv(t)
	e.mgr.Set(e.ca.Issue(t, "/w"), uid)
	set, err := e.client(t).FetchX509Bundles(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	b, ok := set.Get(td)
	if !ok || len(b.X509Authorities()) != 1 || !b.X509Authorities()[0].Equal(e.ca.Cert) {
		t.Fatalf("bundle for %s missing or wrong", td)
	}
}

// failingAttestor proves that one broken attestor does not take the others'
// selectors down with it.
type failingAttestor struct{}

func (failingAttestor) Attest(context.Context, int32, int) ([]*types.Selector, error) {
	return nil, fmt.Errorf("boom")
}

func TestFailingAttestorIsIgnored(t *testing.T) {
	uid, _, _, _ := selfSelectors(t)
	e := newEnv(t, failingAttestor{})
	e.mgr.Set(e.ca.Issue(t, "/w"), uid)
	if _, err := e.client(t).FetchX509SVID(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
}

func TestListen(t *testing.T) {
	dir, err := os.MkdirTemp("", "wlapi")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := dir + "/a/b/api.sock"
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o777 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket mode %v, want socket 0777", fi.Mode())
	}
	di, err := os.Stat(dir + "/a/b")
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o755 {
		t.Fatalf("dir mode %v, want 0755", di.Mode().Perm())
	}
	// Close removes the socket; a stale one (a killed agent's: the file
	// stays, nothing listens) is replaced.
	l.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket after Close: %v, want removed", err)
	}
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	l, err = Listen(path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l.Close()

	// A regular file is never removed.
	file := dir + "/file.sock"
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Fatal("regular file was modified")
	}
}

// TestJWTWithoutX509SVID: beyond x509_svid_cache_max_size an entry may hold
// no X.509-SVID; the workload still gets its JWT-SVID, as from SPIRE.
func TestJWTWithoutX509SVID(t *testing.T) {
	uid, _, _, _ := selfSelectors(t)
	e := newEnv(t)
	e.mgr.Set(e.ca.Issue(t, "/held"), uid)
	e.mgr.SetEntry("/bare", uid)
	c := e.client(t)
	ctx := ctxT(t, 15*time.Second)
	svids, err := c.FetchJWTSVIDs(ctx, jwtsvid.Params{Audience: "aud"})
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, s := range svids {
		paths = append(paths, s.ID.Path())
	}
	sort.Strings(paths)
	if !slices.Equal(paths, []string{"/bare", "/held"}) {
		t.Fatalf("JWT-SVIDs for %v, want [/bare /held]", paths)
	}
	x, err := c.FetchX509Context(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(x.SVIDs) != 1 || x.SVIDs[0].ID.Path() != "/held" {
		t.Fatalf("X.509-SVIDs %v, want only /held", x.SVIDs)
	}
}
