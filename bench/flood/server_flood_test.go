package flood

// The server bench: a server process (this test binary re-executed as
// TestServerProcess, a real server from servertest: SQLite, CA, TCP and
// admin listeners) flooded from one source address with idle connections
// that complete TLS without a client certificate and send the HTTP/2
// preface, while the test times legitimate calls.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/endpoints"
	"github.com/spiffe-hw/spire-hw/server/servertest"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Environment of the server process the bench re-executes itself as.
const (
	// serverDirEnv makes TestServerProcess run a server and write its
	// addresses into that directory.
	serverDirEnv = "FLOOD_SERVER_DIR"
	// serverLimitsEnv is the body of its connection_limits block.
	serverLimitsEnv = "FLOOD_SERVER_LIMITS"
)

// The idle timeout is long in both scenarios: it stands for a flooder
// that keeps each connection with a call now and then, the worst case for
// the caps (an idle timeout only makes a lazier flooder reconnect).
const benchIdleTimeout = `unauthenticated_idle_timeout = "10m"`

// serverScenarios are the servers compared: without caps (every cap raised
// out of reach) and with the defaults.
var serverScenarios = []struct{ name, limits string }{
	{"uncapped", `max_connections = 1000000
		max_connections_per_id = 1000000
		max_handshakes = 1000000
		max_handshakes_per_source = 1000000
		max_unauthenticated = 1000000
		max_unauthenticated_per_source = 1000000
		` + benchIdleTimeout},
	{"default limits", benchIdleTimeout},
}

var (
	floodSource = net.IPv4(127, 0, 0, 1)
	legitSource = net.IPv4(127, 0, 0, 2)
)

// TestServerProcess is the server when TestServerFlood re-executes the test
// binary; it serves until stdin closes.
func TestServerProcess(t *testing.T) {
	dir := os.Getenv(serverDirEnv)
	if dir == "" {
		t.Skip("runs only as the server process that TestServerFlood starts")
	}
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	s := servertest.Start(t, servertest.Options{Log: logf, ServerExtra: "connection_limits {\n" + os.Getenv(serverLimitsEnv) + "\n}"})
	ready := fmt.Sprintf("%s\n%s\n", s.Addr, s.Socket)
	if err := os.WriteFile(filepath.Join(dir, "ready.tmp"), []byte(ready), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "ready.tmp"), filepath.Join(dir, "ready")); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// serverProc is a running server process.
type serverProc struct {
	cmd          *exec.Cmd
	stdin        io.WriteCloser
	dir          string
	addr, socket string
	bundle       *x509bundle.Bundle
	exited       chan struct{}
}

func startServerProc(t *testing.T, limits string) *serverProc {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestServerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), serverDirEnv+"="+dir, serverLimitsEnv+"="+limits)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProc{cmd: cmd, stdin: stdin, dir: dir, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(p.stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(dir, "ready"))
		if err == nil {
			f := strings.Fields(string(b))
			p.addr, p.socket = f[0], f[1]
			break
		}
		select {
		case <-p.exited:
			t.Fatal("server process exited before it was ready")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("server process did not start in 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.bundle = p.fetchBundle(t)
	return p
}

func (p *serverProc) stop() {
	if p.stdin != nil {
		p.stdin.Close()
		p.stdin = nil
		select {
		case <-p.exited:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	}
}

func (p *serverProc) admin(t *testing.T) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+p.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func (p *serverProc) fetchBundle(t *testing.T) *x509bundle.Bundle {
	t.Helper()
	conn := p.admin(t)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := bundlev1.NewBundleClient(conn).GetBundle(ctx, &bundlev1.GetBundleRequest{})
	if err != nil {
		t.Fatalf("bundle over the admin socket: %v", err)
	}
	out := x509bundle.New(servertest.TrustDomain)
	for _, a := range b.X509Authorities {
		c, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			t.Fatal(err)
		}
		out.AddX509Authority(c)
	}
	return out
}

func (p *serverProc) refusalLines(t *testing.T) int {
	t.Helper()
	f, err := os.Open(filepath.Join(p.dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "Refused connection") {
			n++
		}
	}
	return n
}

// http2Preface is a gRPC client's first bytes: the HTTP/2 preface and an
// empty SETTINGS frame.
var http2Preface = append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)

// floodConns opens n idle TLS connections from floodSource, with 8 dialers
// at a time; refused ones (closed by the server after the handshake, or
// failing it) are counted when classified. The connections are raw TLS,
// which servertest.DialFrom (a gRPC client of an in-process server) does
// not give.
func (p *serverProc) floodConns(n int) []net.Conn {
	return p.floodConnsWith(n, tlsconfig.TLSClientConfig(p.bundle, tlsconfig.AuthorizeAny()))
}

// floodConnsWith is floodConns with a TLS configuration of the caller's,
// such as one that presents an SVID.
func (p *serverProc) floodConnsWith(n int, cfg *tls.Config) []net.Conn {
	cfg.NextProtos = []string{"h2"}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: floodSource}, Timeout: 10 * time.Second}
	conns := make([]net.Conn, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				c, err := tls.DialWithDialer(d, "tcp", p.addr, cfg)
				if err != nil {
					continue
				}
				if _, err := c.Write(http2Preface); err != nil {
					c.Close()
					continue
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	return conns
}

// countHeld closes the connections the server has closed and returns
// those it holds: a held one gets no EOF within the wait.
func countHeld(conns []net.Conn, wait time.Duration) int {
	var held atomic.Int64
	var wg sync.WaitGroup
	for i, c := range conns {
		if c == nil {
			continue
		}
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(wait))
			_, err := io.Copy(io.Discard, c)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.SetReadDeadline(time.Time{})
				held.Add(1)
				return
			}
			c.Close()
			conns[i] = nil
		})
	}
	wg.Wait()
	return int(held.Load())
}

// timeCalls times n calls of each kind, each on a new connection as the
// CLI and a bootstrapping agent make them: GetBundle over TCP from
// legitSource without a certificate, and a health check on the admin
// socket. Failed calls are counted, not timed. It dials itself rather
// than through servertest.DialFrom, which is a method of an in-process
// server (this one is another process) and fetches the bundle over the
// admin socket on every dial, which would add an admin call to each timed
// GetBundle.
func (p *serverProc) timeCalls(n int) (bundle, admin []time.Duration, failed int) {
	cfg := tlsconfig.TLSClientConfig(p.bundle, tlsconfig.AuthorizeAny())
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: legitSource}, Timeout: 5 * time.Second}
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
			grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }))
		if err == nil {
			_, err = bundlev1.NewBundleClient(conn).GetBundle(ctx, &bundlev1.GetBundleRequest{})
			conn.Close()
		}
		if err != nil {
			failed++
		} else {
			bundle = append(bundle, time.Since(start))
		}
		start = time.Now()
		conn, err = grpc.NewClient("unix://"+p.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err == nil {
			var r *healthpb.HealthCheckResponse
			r, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if err == nil && r.Status != healthpb.HealthCheckResponse_SERVING {
				err = fmt.Errorf("status %v", r.Status)
			}
			conn.Close()
		}
		if err != nil {
			failed++
		} else {
			admin = append(admin, time.Since(start))
		}
		cancel()
	}
	return bundle, admin, failed
}

// serverRun is one server's figures: at rest, then with the flood held.
type serverRun struct {
	name                    string
	flood, held             int
	fdsRest, fdsFlood       int
	rssRest, rssFlood       int // KiB
	bundleRest, bundleFlood []time.Duration
	adminRest, adminFlood   []time.Duration
	failedRest, failedFlood int
	refusalLines            int
	// bundleRatios and adminRatios are each round's p99 during / at rest.
	bundleRatios, adminRatios []float64
	rounds, callsPerRound     int
}

// runServerScenario measures one server over rounds: each times calls at
// rest, opens the flood, times calls during it, and closes the flood.
// Descriptors and RSS are the first round's (the Go heap keeps what the
// first flood grew it to); latency ratios are per round, so that a burst
// of load from other processes on the machine skews one round, not the
// comparison.
func runServerScenario(t *testing.T, name, limits string, flood, calls, rounds int) serverRun {
	t.Helper()
	p := startServerProc(t, limits)
	r := serverRun{name: name, flood: flood}
	pid := p.cmd.Process.Pid
	p.timeCalls(calls / 10) // warm up: first-use allocations, caches
	for round := range rounds {
		bundleRest, adminRest, failed := p.timeCalls(calls)
		r.failedRest += failed
		if round == 0 {
			r.fdsRest, r.rssRest = procFigures(t, pid)
		}
		conns := p.floodConns(flood)
		held := countHeld(conns, 2*time.Second)
		if round == 0 {
			r.held = held
			r.fdsFlood, r.rssFlood = procFigures(t, pid)
		} else if held != r.held {
			t.Logf("%s: round %d held %d flood connections, round 0 %d", name, round, held, r.held)
		}
		bundleFlood, adminFlood, failed := p.timeCalls(calls)
		r.failedFlood += failed
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		r.bundleRest, r.bundleFlood = append(r.bundleRest, bundleRest...), append(r.bundleFlood, bundleFlood...)
		r.adminRest, r.adminFlood = append(r.adminRest, adminRest...), append(r.adminFlood, adminFlood...)
		r.bundleRatios = append(r.bundleRatios, ratio(Quantile(bundleFlood, .99), Quantile(bundleRest, .99)))
		r.adminRatios = append(r.adminRatios, ratio(Quantile(adminFlood, .99), Quantile(adminRest, .99)))
		// Let the server see the closes before the next round's rest.
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if fds, _ := FDs(pid); fds <= r.fdsRest+2 {
				break
			}
		}
	}
	r.rounds, r.callsPerRound = rounds, calls
	r.refusalLines = p.refusalLines(t)
	return r
}

func procFigures(t *testing.T, pid int) (fds, rssKiB int) {
	t.Helper()
	fds, err := FDs(pid)
	if err != nil {
		t.Fatal(err)
	}
	if rssKiB, err = RSSKiB(pid); err != nil {
		t.Fatal(err)
	}
	return fds, rssKiB
}

// TestServerFlood floods each server from one address and times a
// GetBundle from another address and an admin health check, at rest and
// during the flood. Tiny, it checks that the default caps hold and the
// legitimate calls are served; BENCH_REPORT=1 writes
// bench/RESULTS-flood-server.md.
func TestServerFlood(t *testing.T) {
	if os.Getenv(serverDirEnv) != "" {
		t.Skip("in the server process")
	}
	flood, calls, rounds := size(300, 10000), size(20, 200), size(1, 5)
	var runs []serverRun
	for _, sc := range serverScenarios {
		if !fullSize && sc.name == "uncapped" {
			continue // the tiny run checks the caps only
		}
		r := runServerScenario(t, sc.name, sc.limits, flood, calls, rounds)
		t.Logf("%s: held %d of %d; fds %d -> %d; RSS %d -> %d KiB; refusal lines %d; failed %d/%d",
			r.name, r.held, r.flood, r.fdsRest, r.fdsFlood, r.rssRest, r.rssFlood, r.refusalLines, r.failedRest, r.failedFlood)
		runs = append(runs, r)
	}
	for _, r := range runs {
		if r.failedRest+r.failedFlood != 0 {
			t.Errorf("%s: %d legitimate calls failed at rest, %d during the flood", r.name, r.failedRest, r.failedFlood)
		}
		if r.name != "default limits" {
			continue
		}
		if r.held != endpoints.DefaultMaxUnauthenticatedPerSource {
			t.Errorf("%s: one source holds %d idle connections, want the per-source cap %d", r.name, r.held, endpoints.DefaultMaxUnauthenticatedPerSource)
		}
		if r.refusalLines == 0 {
			t.Errorf("%s: the cap bit but no refusal line was logged", r.name)
		}
	}
	if fullSize && !t.Failed() {
		if err := writeServerReport(runs); err != nil {
			t.Fatal(err)
		}
	}
}

// mint has the server process mint an X.509-SVID for path over its admin
// socket, as `spire-server x509 mint` does.
func (p *serverProc) mint(t *testing.T, path string) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u := &url.URL{Scheme: "spiffe", Host: servertest.TrustDomain.Name(), Path: path}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	conn := p.admin(t)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := svidv1.NewSVIDClient(conn).MintX509SVID(ctx, &svidv1.MintX509SVIDRequest{Csr: csr})
	if err != nil {
		t.Fatalf("mint %s: %v", path, err)
	}
	svid, err := servertest.ParseSVID(resp.Svid.CertChain, key)
	if err != nil {
		t.Fatal(err)
	}
	return svid
}

// TestServerFloodOneSVID floods a server with the default limits from one
// address with idle connections that all present one workload's SVID (a
// compromised workload, or anything minted): it holds the per-ID cap, not
// max_connections, logs the refusals, and the legitimate calls from
// another address and on the admin socket are served meanwhile.
func TestServerFloodOneSVID(t *testing.T) {
	if os.Getenv(serverDirEnv) != "" {
		t.Skip("in the server process")
	}
	flood, calls := size(150, 2000), size(20, 200)
	// The long idle timeout: a slow flood must not see its first
	// connections closed as idle before it is counted.
	p := startServerProc(t, benchIdleTimeout)
	svid := p.mint(t, "/workload")
	conns := p.floodConnsWith(flood, tlsconfig.MTLSClientConfig(svid, p.bundle, tlsconfig.AuthorizeAny()))
	held := countHeld(conns, 2*time.Second)
	bundle, admin, failed := p.timeCalls(calls)
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	t.Logf("one workload SVID: held %d of %d; GetBundle p99 %v, admin p99 %v during; failed %d of %d",
		held, flood, Quantile(bundle, .99), Quantile(admin, .99), failed, 2*calls)
	if held != endpoints.DefaultMaxConnectionsPerID {
		t.Errorf("one SVID holds %d idle connections, want the per-ID cap %d", held, endpoints.DefaultMaxConnectionsPerID)
	}
	if failed != 0 {
		t.Errorf("%d legitimate calls failed during the flood", failed)
	}
	if p.refusalLines(t) == 0 {
		t.Error("the per-ID cap bit but no refusal line was logged")
	}
}
