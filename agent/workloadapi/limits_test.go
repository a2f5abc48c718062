package workloadapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	wltest "github.com/spiffe-hw/spire-hw/agent/workloadapi/workloadapitest"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/unix"
	"github.com/spiffe-hw/spire-hw/internal/connlimit"
	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
)

// limitedEnv is a Workload API server as Serve builds it: the listener
// wrapped by LimitListener and the gRPC options of ServerOptions.
type limitedEnv struct {
	ca     *wltest.CA
	mgr    *wltest.Manager
	dir    string
	socket string
	ln     *connlimit.Listener
	logs   *syncbuf.Buffer
}

func newLimitedEnv(t *testing.T, lim Limits) *limitedEnv {
	t.Helper()
	ca := wltest.NewCA(t, td)
	mgr := wltest.NewManager(t, ca)
	logs := &syncbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	h := New(Config{
		Manager:     mgr,
		Attestors:   []Attestor{unix.New(unix.Config{})},
		TrustDomain: td,
		Log:         log,
	})
	// Not t.TempDir: its 0700 directory would keep other uids out.
	dir, err := os.MkdirTemp("", "wlapi-limits")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "public", "api.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ln := LimitListener(l, lim, log)
	s, err := NewServer(h, ServerOptions(lim)...)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return &limitedEnv{ca: ca, mgr: mgr, dir: dir, socket: sock, ln: ln, logs: logs}
}

// countingDialer dials the socket and counts the connections made, so a
// test can tell a reused connection from a new one.
func (e *limitedEnv) countingDialer(n *atomic.Int32) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, _ string) (net.Conn, error) {
		n.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "unix", e.socket)
	}
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLimitsEffective(t *testing.T) {
	def := Limits{}.Effective()
	if want := DefaultMaxConnections(); def.MaxConnections != want {
		t.Errorf("default total %d, want %d", def.MaxConnections, want)
	}
	if def.MaxConnectionsPerUID != min(DefaultMaxConnectionsPerUID, def.MaxConnections/2) {
		t.Errorf("default per-uid %d", def.MaxConnectionsPerUID)
	}
	if def.HandshakeTimeout != DefaultHandshakeTimeout || def.IdleTimeout != DefaultIdleTimeout {
		t.Errorf("default timeouts %v, %v", def.HandshakeTimeout, def.IdleTimeout)
	}
	// A small total halves the per-uid default, so one uid cannot take
	// every slot.
	if got := (Limits{MaxConnections: 100}).Effective().MaxConnectionsPerUID; got != 50 {
		t.Errorf("per-uid under a total of 100: %d, want 50", got)
	}
	// An explicit per-uid cap is kept as given.
	if got := (Limits{MaxConnections: 100, MaxConnectionsPerUID: 70}).Effective().MaxConnectionsPerUID; got != 70 {
		t.Errorf("explicit per-uid: %d, want 70", got)
	}
	if got := (Limits{MaxConnections: -1, MaxConnectionsPerUID: -1}).Effective(); got.MaxConnections != 0 || got.MaxConnectionsPerUID != 0 {
		t.Errorf("negative caps: %+v, want 0 (none)", got)
	}
	if n := DefaultMaxConnections(); n < minDefaultTotal || n > maxDefaultTotal {
		t.Errorf("derived total %d outside [%d, %d]", n, minDefaultTotal, maxDefaultTotal)
	}
}

// TestIdleConnectionClosedClientReconnects: a go-spiffe client whose
// connection the agent closed while idle still works on its next call,
// over a new connection.
func TestIdleConnectionClosedClientReconnects(t *testing.T) {
	uid, _, _, _ := selfSelectors(t)
	e := newLimitedEnv(t, Limits{IdleTimeout: 200 * time.Millisecond})
	e.mgr.Set(e.ca.Issue(t, "/idle"), uid)
	var dials atomic.Int32
	c, err := workloadapi.New(context.Background(), workloadapi.WithAddr("unix://"+e.socket),
		workloadapi.WithDialOptions(grpc.WithContextDialer(e.countingDialer(&dials))))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	if _, err := c.FetchX509SVID(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	// The agent closes the idle connection: its slot is freed.
	waitFor(t, 10*time.Second, "the idle connection was not closed", func() bool {
		n, _ := e.ln.Slots().Count("")
		return n == 0
	})
	svid, err := c.FetchX509SVID(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatalf("fetch after the idle close: %v", err)
	}
	if svid.ID.Path() != "/idle" {
		t.Fatalf("got %s", svid.ID)
	}
	if n := dials.Load(); n != 2 {
		t.Fatalf("%d connections made, want 2 (the first closed while idle, then one more)", n)
	}
}

// goawaySniffer counts the HTTP/2 GOAWAY frames the agent sends on a
// client connection, by reading the frame headers as they pass. The server
// side sends no preface, so its bytes are frames from the first one. Only
// the client transport's reader calls Read.
type goawaySniffer struct {
	net.Conn
	goaways *atomic.Int32
	hdr     [9]byte
	nhdr    int
	skip    int // payload bytes of the current frame not yet passed
}

func (s *goawaySniffer) Read(p []byte) (int, error) {
	n, err := s.Conn.Read(p)
	for b := p[:n]; len(b) > 0; {
		if s.skip > 0 {
			k := min(s.skip, len(b))
			s.skip -= k
			b = b[k:]
			continue
		}
		k := copy(s.hdr[s.nhdr:], b)
		s.nhdr += k
		b = b[k:]
		if s.nhdr == len(s.hdr) {
			s.nhdr = 0
			s.skip = int(s.hdr[0])<<16 | int(s.hdr[1])<<8 | int(s.hdr[2])
			if s.hdr[3] == 0x7 { // GOAWAY
				s.goaways.Add(1)
			}
		}
	}
	return n, err
}

// TestOpenStreamIsNotIdle: a connection holding a FetchX509SVID stream is
// kept past many idle timeouts, and the stream still gets rotations.
func TestOpenStreamIsNotIdle(t *testing.T) {
	uid, _, _, _ := selfSelectors(t)
	const idle = 100 * time.Millisecond
	e := newLimitedEnv(t, Limits{IdleTimeout: idle})
	first := e.ca.Issue(t, "/streaming")
	e.mgr.Set(first, uid)
	ctx := metadata.AppendToOutgoingContext(ctxT(t, 30*time.Second), "workload.spiffe.io", "true")

	var (
		dials, goaways atomic.Int32
		cc             *grpc.ClientConn
		stream         workload.SpiffeWorkloadAPI_FetchX509SVIDClient
	)
	for attempt := 1; ; attempt++ {
		dials.Store(0)
		goaways.Store(0)
		var err error
		cc, err = grpc.NewClient("passthrough:///wlapi", grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				c, err := e.countingDialer(&dials)(ctx, addr)
				if err != nil {
					return nil, err
				}
				return &goawaySniffer{Conn: c, goaways: &goaways}, nil
			}))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		stream, err = workload.NewSpiffeWorkloadAPIClient(cc).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		// A GOAWAY read before the stream's first response means the
		// connection reached its idle timeout before the stream's headers
		// did (a loaded machine can take longer than idle to get there):
		// the timeout working, not what this test is after. Frames on a
		// connection arrive in order, so one sent because of the open
		// stream can only come after that response.
		if goaways.Load() == 0 {
			break
		}
		if attempt == 5 {
			t.Fatalf("%d attempts: the connection went idle each time before the stream opened", attempt)
		}
		t.Logf("attempt %d: idle timeout before the stream opened; again", attempt)
		cc.Close()
	}
	// Many idle timeouts pass with the stream open.
	time.Sleep(10 * idle)
	second := e.ca.Issue(t, "/streaming")
	e.mgr.Set(second, uid)
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("stream cut while open: %v", err)
	}
	if got := resp.Svids[0].X509Svid; !bytes.Equal(got, second.SVID.Chain()) {
		t.Fatal("the rotated SVID was not sent")
	}
	if n := goaways.Load(); n != 0 {
		t.Fatalf("the agent sent %d GOAWAY frames on a connection with a stream open", n)
	}
	// Had the agent sent GOAWAY, the channel would have left READY and a
	// new call would need a new connection.
	if s := cc.GetState(); s != connectivity.Ready {
		t.Fatalf("channel state %v with a stream open, want READY", s)
	}
	if _, err := workload.NewSpiffeWorkloadAPIClient(cc).FetchX509Bundles(ctx, &workload.X509BundlesRequest{}); err != nil {
		t.Fatal(err)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d connections made, want 1: the connection with an open stream was closed", n)
	}
}

// TestSilentConnectionTimesOut: a connection that never sends the HTTP/2
// preface is closed after the handshake timeout and frees its slot.
func TestSilentConnectionTimesOut(t *testing.T) {
	e := newLimitedEnv(t, Limits{HandshakeTimeout: 200 * time.Millisecond})
	c, err := net.Dial("unix", e.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A bound on the test, far above the timeout under test.
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err = io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the agent kept a connection that never sent its preface")
	}
	waitFor(t, 10*time.Second, "the silent connection's slot was not freed", func() bool {
		n, _ := e.ln.Slots().Count("")
		return n == 0
	})
}

// TestServeMetrics: Serve exports the listener's counters under SPIRE's
// connection metric names, with refusals by reason.
func TestServeMetrics(t *testing.T) {
	dir, err := os.MkdirTemp("", "wlapi-metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "api.sock")
	reg := prometheus.NewRegistry()
	h := New(Config{Manager: wltest.NewManager(t, wltest.NewCA(t, td)), TrustDomain: td, Log: quietLog()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ServeConfig{SocketPath: sock, Limits: Limits{MaxConnectionsPerUID: 2, HandshakeTimeout: time.Minute}, Metrics: reg}, h)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitFor(t, 10*time.Second, "the socket did not appear", func() bool { _, err := os.Stat(sock); return err == nil })
	for range 5 {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	value := func(name, reason string) float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				if reason != "" && (len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != reason) {
					continue
				}
				if m.GetGauge() != nil {
					return m.GetGauge().GetValue()
				}
				return m.GetCounter().GetValue()
			}
		}
		return -1
	}
	waitFor(t, 10*time.Second, "refusals not counted", func() bool {
		return value("spire_agent_workload_api_connections_refused_total", "per_uid") == 3
	})
	if got := value("spire_agent_workload_api_socket_connections", ""); got != 2 {
		t.Errorf("open connections %v, want 2", got)
	}
	if got := value("spire_agent_workload_api_socket_connections_accepted_total", ""); got != 2 {
		t.Errorf("accepted connections %v, want 2", got)
	}
	if got := value("spire_agent_workload_api_connections_refused_total", "total"); got != 0 {
		t.Errorf("total-cap refusals %v, want 0", got)
	}
}

// TestStreamsPerConnectionCapped: one connection holding
// MaxStreamsPerConnection open streams cannot open another until one ends
// (gRPC queues it), and a second connection is still served meanwhile.
func TestStreamsPerConnectionCapped(t *testing.T) {
	uid, _, _, _ := selfSelectors(t)
	e := newLimitedEnv(t, Limits{})
	e.mgr.Set(e.ca.Issue(t, "/streams"), uid)
	ctx := metadata.AppendToOutgoingContext(ctxT(t, 60*time.Second), "workload.spiffe.io", "true")
	var dials atomic.Int32
	dial := func() *grpc.ClientConn {
		cc, err := grpc.NewClient("passthrough:///wlapi", grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(e.countingDialer(&dials)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	cc := dial()
	client := workload.NewSpiffeWorkloadAPIClient(cc)
	cancels := make([]context.CancelFunc, 0, MaxStreamsPerConnection)
	for i := range MaxStreamsPerConnection {
		sctx, cancel := context.WithCancel(ctx)
		cancels = append(cancels, cancel)
		s, err := client.FetchX509SVID(sctx, &workload.X509SVIDRequest{})
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	// One more on the same connection waits: it must not be answered
	// while every slot is held.
	extra := make(chan error, 1)
	go func() {
		s, err := client.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
		if err == nil {
			_, err = s.Recv()
		}
		extra <- err
	}()
	// Meanwhile another connection is served at once.
	if _, err := workload.NewSpiffeWorkloadAPIClient(dial()).FetchX509Bundles(ctx, &workload.X509BundlesRequest{}); err != nil {
		t.Fatalf("second connection: %v", err)
	}
	select {
	case err := <-extra:
		t.Fatalf("stream %d on a full connection answered (err %v), want it held until a slot frees", MaxStreamsPerConnection+1, err)
	case <-time.After(300 * time.Millisecond):
	}
	cancels[0]()
	select {
	case err := <-extra:
		if err != nil {
			t.Fatalf("queued stream after a slot freed: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the queued stream was never served after a slot freed")
	}
	for _, c := range cancels[1:] {
		c()
	}
}
