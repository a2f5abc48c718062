package admin

import (
	"context"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	debugv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/debug/v1"
	loggerv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/logger/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/agent/workloadapi"
	wltest "github.com/spiffe-hw/spire-hw/agent/workloadapi/workloadapitest"
	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/internal/testclock"
	"github.com/spiffe-hw/spire-hw/logging"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// manager holds a real agent SVID signed by a real test CA, and counts
// the test sets.
type manager struct {
	mu                 sync.Mutex
	svid               *x509svid.SVID
	bundle             *spiffebundle.Bundle
	x509, jwt, storeNo int
	last               time.Time
}

func (m *manager) AgentSVID() *x509svid.SVID {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.svid
}

func (m *manager) Bundle() *spiffebundle.Bundle {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bundle
}

func (m *manager) CountX509SVIDs() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.x509
}

func (m *manager) CountJWTSVIDs() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.jwt
}

func (m *manager) CountSVIDStoreX509SVIDs() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.storeNo
}

func (m *manager) LastSync() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

func (m *manager) setCounts(x509, jwt, store int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.x509, m.jwt, m.storeNo = x509, jwt, store
}

func newManager(t *testing.T) (*manager, *wltest.CA) {
	t.Helper()
	ca := wltest.NewCA(t, td)
	id := ca.Issue(t, "/spire/agent/join_token/abc")
	certs, err := id.SVID.ParseCertificates()
	if err != nil {
		t.Fatal(err)
	}
	key, err := id.SVID.Signer()
	if err != nil {
		t.Fatal(err)
	}
	svid := &x509svid.SVID{ID: spiffeid.RequireFromString("spiffe://example.org/spire/agent/join_token/abc"),
		Certificates: certs, PrivateKey: key}
	return &manager{svid: svid, bundle: ca.Bundle()}, ca
}

// env is a served admin socket.
type env struct {
	sock string
	logs *syncbuf.Buffer
	conn *grpc.ClientConn
}

// serve runs Serve with cfg (socket, log and level filled in when unset)
// until the test ends, and connects to it.
func serve(t *testing.T, cfg Config) *env {
	t.Helper()
	dir, err := os.MkdirTemp("", "adm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &env{sock: filepath.Join(dir, "admin", "admin.sock"), logs: &syncbuf.Buffer{}}
	cfg.SocketPath = e.sock
	if cfg.Log == nil {
		if cfg.LogLevel == nil {
			cfg.LogLevel = logging.NewLevel(slog.LevelInfo)
		}
		if cfg.Log, err = logging.NewWriter(e.logs, cfg.LogLevel, "text"); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return")
		}
	})
	waitFor(t, "the admin socket did not appear", func() bool {
		fi, err := os.Lstat(e.sock)
		return err == nil && fi.Mode().Type() == fs.ModeSocket
	})
	e.conn, err = grpc.NewClient("unix://"+e.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.conn.Close() })
	return e
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSocketMode: the socket is 0770 in a 0770 directory the agent made,
// and shutdown removes the socket only.
func TestSocketMode(t *testing.T) {
	m, _ := newManager(t)
	e := serve(t, Config{Manager: m, TrustDomain: td})
	fi, err := os.Lstat(e.sock)
	if err != nil || fi.Mode() != fs.ModeSocket|0o770 {
		t.Fatalf("socket %v %v, want srwxrwx---", fi.Mode(), err)
	}
	if di, err := os.Stat(filepath.Dir(e.sock)); err != nil || di.Mode() != fs.ModeDir|0o770 {
		t.Fatalf("directory %v %v, want drwxrwx---", di.Mode(), err)
	}
	// Serve logs once it has the socket.
	waitFor(t, "no start line", func() bool {
		return strings.Contains(e.logs.String(), `msg="Starting Admin APIs" network=unix address=`+e.sock+" max_connections=64 max_connections_per_uid=16")
	})
}

// TestGetInfo: SPIRE's fields, from the manager, the chain verified up to
// the root; the answer is reused for 5 s, then recomputed.
func TestGetInfo(t *testing.T) {
	m, ca := newManager(t)
	last := time.Unix(1_800_000_000, 0)
	m.setCounts(3, 2, 1)
	m.last = last
	clk := testclock.New(time.Now())
	e := serve(t, Config{Manager: m, TrustDomain: td, Clock: clk.Now, Uptime: func() time.Duration { return 90 * time.Second }})
	c := debugv1.NewDebugClient(e.conn)
	ctx := context.Background()
	got, err := c.GetInfo(ctx, &debugv1.GetInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.SvidChain) != 2 {
		t.Fatalf("chain of %d certificates, want leaf and root", len(got.SvidChain))
	}
	leaf, root := got.SvidChain[0], got.SvidChain[1]
	if leaf.Id.GetTrustDomain() != "example.org" || leaf.Id.GetPath() != "/spire/agent/join_token/abc" ||
		leaf.ExpiresAt != m.svid.Certificates[0].NotAfter.Unix() {
		t.Fatalf("leaf %v", leaf)
	}
	if root.Subject != ca.Cert.Subject.String() || root.ExpiresAt != ca.Cert.NotAfter.Unix() || root.Id.GetPath() != "" {
		t.Fatalf("root %v", root)
	}
	//lint:ignore SA1019 SPIRE still sends the deprecated count
	svidsCount := got.SvidsCount
	if got.Uptime != 90 || got.CachedX509SvidsCount != 3 || svidsCount != 3 || got.CachedJwtSvidsCount != 2 ||
		got.CachedSvidstoreX509SvidsCount != 1 || got.LastSyncSuccess != last.Unix() {
		t.Fatalf("GetInfo = %v", got)
	}

	m.setCounts(5, 0, 0)
	clk.Add(infoTTL - time.Second)
	if got, _ := c.GetInfo(ctx, &debugv1.GetInfoRequest{}); got.CachedX509SvidsCount != 3 {
		t.Fatalf("answer within %v recomputed: %v", infoTTL, got)
	}
	clk.Add(time.Second)
	if got, _ := c.GetInfo(ctx, &debugv1.GetInfoRequest{}); got.CachedX509SvidsCount != 5 || got.CachedJwtSvidsCount != 0 {
		t.Fatalf("answer after %v not recomputed: %v", infoTTL, got)
	}
}

// TestGetInfoRefusals: no SVID, or one that does not chain to the bundle,
// is an Internal error that says why, as in SPIRE, and is logged.
func TestGetInfoRefusals(t *testing.T) {
	m, _ := newManager(t)
	other := wltest.NewCA(t, td).Bundle()
	for _, tt := range []struct {
		name string
		set  func()
		want string
	}{
		{"no SVID", func() { m.svid = nil }, "the agent has no SVID yet"},
		{"no bundle", func() { m.svid, _ = newManagerSVID(t); m.bundle = nil }, "no bundle for example.org"},
		{"foreign CA", func() { m.bundle = other }, "x509svid: could not verify leaf certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m.mu.Lock()
			tt.set()
			m.mu.Unlock()
			e := serve(t, Config{Manager: m, TrustDomain: td})
			_, err := debugv1.NewDebugClient(e.conn).GetInfo(context.Background(), &debugv1.GetInfoRequest{})
			if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "failed to verify agent SVID: "+tt.want) {
				t.Fatalf("GetInfo: %v", err)
			}
			if !strings.Contains(e.logs.String(), `level=ERROR msg="Failed to verify agent SVID" subsystem=debug_api`) {
				t.Fatalf("refusal not logged:\n%s", e.logs.String())
			}
		})
	}
}

func newManagerSVID(t *testing.T) (*x509svid.SVID, *spiffebundle.Bundle) {
	m, _ := newManager(t)
	return m.svid, m.bundle
}

// TestLoggerLiveLevel: logger/v1 changes the level every logger of the
// agent obeys: the DEBUG line of each admin call appears after SetLogLevel
// DEBUG and stops after ResetLogLevel.
func TestLoggerLiveLevel(t *testing.T) {
	m, _ := newManager(t)
	e := serve(t, Config{Manager: m, TrustDomain: td})
	c := loggerv1.NewLoggerClient(e.conn)
	ctx := context.Background()
	calls := func() int { return strings.Count(e.logs.String(), `msg="Admin API call"`) }
	got, err := c.GetLogger(ctx, &loggerv1.GetLoggerRequest{})
	if err != nil || got.CurrentLevel != types.LogLevel_INFO || got.LaunchLevel != types.LogLevel_INFO {
		t.Fatalf("GetLogger: %v %v", got, err)
	}
	if calls() != 0 {
		t.Fatalf("DEBUG line at INFO:\n%s", e.logs.String())
	}
	got, err = c.SetLogLevel(ctx, &loggerv1.SetLogLevelRequest{NewLevel: types.LogLevel_DEBUG})
	if err != nil || got.CurrentLevel != types.LogLevel_DEBUG || got.LaunchLevel != types.LogLevel_INFO {
		t.Fatalf("SetLogLevel: %v %v", got, err)
	}
	// The line is written before the answer is sent.
	if _, err := c.GetLogger(ctx, &loggerv1.GetLoggerRequest{}); err != nil {
		t.Fatal(err)
	}
	logs := e.logs.String()
	want := `level=DEBUG msg="Admin API call" method=/spire.api.agent.logger.v1.Logger/GetLogger status=OK`
	if !strings.Contains(logs, want) || !strings.Contains(logs, "caller_uid=") || !strings.Contains(logs, "caller_pid=") {
		t.Fatalf("no %s with the caller in:\n%s", want, logs)
	}
	if _, err := c.ResetLogLevel(ctx, &loggerv1.ResetLogLevelRequest{}); err != nil {
		t.Fatal(err)
	}
	before := calls()
	if _, err := c.GetLogger(ctx, &loggerv1.GetLoggerRequest{}); err != nil {
		t.Fatal(err)
	}
	if calls() != before {
		t.Fatalf("DEBUG lines after reset:\n%s", e.logs.String())
	}
	_, err = c.SetLogLevel(ctx, &loggerv1.SetLogLevelRequest{})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("unspecified level: %v", err)
	}
}

// TestLoggerWithoutLiveLevel: a logger the agent cannot adjust is a
// FailedPrecondition, not a silent no-op.
func TestLoggerWithoutLiveLevel(t *testing.T) {
	m, _ := newManager(t)
	e := serve(t, Config{Manager: m, TrustDomain: td, Log: slog.New(slog.DiscardHandler)})
	_, err := loggerv1.NewLoggerClient(e.conn).SetLogLevel(context.Background(), &loggerv1.SetLogLevelRequest{NewLevel: types.LogLevel_DEBUG})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("SetLogLevel: %v", err)
	}
}

// TestPerUIDCap: connections beyond the per-uid cap are refused at accept
// and logged once under the admin API's name; freed slots serve again.
func TestPerUIDCap(t *testing.T) {
	m, _ := newManager(t)
	e := serve(t, Config{Manager: m, TrustDomain: td, Limits: limits(2)})
	conns, refused, err := wltest.Flood(e.sock, 4, nil, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if refused != 2 {
		t.Fatalf("%d of 4 connections refused, want 2", refused)
	}
	logs := e.logs.String()
	if n := strings.Count(logs, "per-peer connection limit reached"); n != 1 || !strings.Contains(logs, `listener="admin API"`) {
		t.Fatalf("%d refusal lines, want 1 naming the admin API:\n%s", n, logs)
	}
	for _, c := range conns {
		c.Close()
	}
	// The closes reach the agent asynchronously: retry until a slot is free.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := loggerv1.NewLoggerClient(e.conn).GetLogger(ctx, &loggerv1.GetLoggerRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("GetLogger after the flood: %v", err)
	}
}

func limits(perUID int) workloadapi.Limits {
	return workloadapi.Limits{MaxConnectionsPerUID: perUID}
}

// Serve refuses a socket path it cannot use, with the config key named.
func TestListenError(t *testing.T) {
	err := Serve(context.Background(), Config{SocketPath: ""})
	if err == nil || !strings.Contains(err.Error(), "admin: admin_socket_path") {
		t.Fatalf("Serve: %v", err)
	}
}
