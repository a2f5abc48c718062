package endpoints_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/server/endpoints"
	"github.com/spiffe-hw/spire-hw/server/servertest"
)

var (
	source1 = net.IPv4(127, 0, 0, 1)
	// source2 is a second source address: Linux routes all of 127/8 to lo.
	source2 = net.IPv4(127, 0, 0, 2)
)

// logBuffer collects the server's log lines.
type logBuffer struct{ syncbuf.Buffer }

// lines returns the lines that contain every one of parts.
func (b *logBuffer) lines(parts ...string) []string {
	var out []string
	for line := range strings.SplitSeq(b.String(), "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// start runs a server with the given connection_limits body; extra goes
// into the server block (admin_ids).
// wait reports whether a line with every one of parts appears within
// 10 s: a client may see its connection closed before the server has
// written the line about it.
func (b *logBuffer) wait(parts ...string) bool {
	for deadline := time.Now().Add(10 * time.Second); len(b.lines(parts...)) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

func start(t *testing.T, limits string, extra ...string) (*servertest.Server, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	s := servertest.Start(t, servertest.Options{Log: logs,
		ServerExtra: "connection_limits {\n" + limits + "\n}\n" + strings.Join(extra, "\n")})
	return s, logs
}

// dialer opens the raw TCP and TLS connections that play a flooder, which
// servertest.DialFrom cannot: it returns gRPC client connections, which
// dial lazily and reconnect on their own.
func dialer(from net.IP) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: from}, Timeout: 5 * time.Second}
}

// mint returns an X.509-SVID for path, minted over the admin socket (as
// `spire-server x509 mint` does).
func mint(t *testing.T, s *servertest.Server, path string) *x509svid.SVID {
	t.Helper()
	key, _ := servertest.NewCSR(t)
	u := &url.URL{Scheme: "spiffe", Host: servertest.TrustDomain.Name(), Path: path}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := svidv1.NewSVIDClient(s.Admin(t)).MintX509SVID(ctx, &svidv1.MintX509SVIDRequest{Csr: csr})
	if err != nil {
		t.Fatalf("mint %s: %v", path, err)
	}
	svid, err := servertest.ParseSVID(resp.Svid.CertChain, key)
	if err != nil {
		t.Fatal(err)
	}
	return svid
}

// newAgent attests an agent from source2, so that the flooded source1 holds
// no connection of the test's own, and returns its SVID.
func newAgent(t *testing.T, s *servertest.Server) *x509svid.SVID {
	t.Helper()
	conn := s.DialFrom(t, source2.String(), nil)
	defer conn.Close()
	key, csr := servertest.NewCSR(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svid, err := s.AttestJoinToken(ctx, conn, s.CreateToken(t), key, csr)
	if err != nil {
		t.Fatalf("attest: %v", err)
	}
	return svid
}

// http2Preface is what a gRPC client sends first: the HTTP/2 connection
// preface and an empty SETTINGS frame. A connection that sent it is past
// the handshake timeout and looks, to the server, like an idle client.
var http2Preface = append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)

// rawTLS opens a TLS connection from the given source (with svid as the
// client certificate when not nil) and, with preface, sends the HTTP/2
// preface and nothing more.
func rawTLS(t *testing.T, s *servertest.Server, from net.IP, svid *x509svid.SVID, preface bool) net.Conn {
	t.Helper()
	c, err := tryRawTLS(t, s, from, svid, preface)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tryRawTLS is rawTLS that returns its error: a connection the server
// refuses at the end of the handshake may fail in it (TLS 1.2) or just
// after (TLS 1.3, where the client finishes first).
func tryRawTLS(t *testing.T, s *servertest.Server, from net.IP, svid *x509svid.SVID, preface bool) (net.Conn, error) {
	t.Helper()
	bundle := s.Bundle(t)
	cfg := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeAny())
	if svid != nil {
		cfg = tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeAny())
	}
	// gRPC refuses a TLS client that does not offer HTTP/2 by ALPN.
	cfg.NextProtos = []string{"h2"}
	c, err := tls.DialWithDialer(dialer(from), "tcp", s.Addr, cfg)
	if err != nil {
		return nil, fmt.Errorf("TLS dial from %v: %w", from, err)
	}
	t.Cleanup(func() { c.Close() })
	if preface {
		if _, err := c.Write(http2Preface); err != nil {
			return nil, fmt.Errorf("write preface: %w", err)
		}
	}
	return c, nil
}

// closedWithin reports whether the server closes c within d: reads drain
// what the server sends (its SETTINGS) until EOF or an error other than
// the read deadline.
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

// countOpen checks every connection in parallel, so that one held
// connection's wait does not add to the others'.
func countOpen(conns []net.Conn, d time.Duration) int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := 0
	for _, c := range conns {
		wg.Go(func() {
			if !closedWithin(c, d) {
				mu.Lock()
				open++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return open
}

// waitOpen waits, at most 10 s, for the server to close all but want of
// conns, and returns how many it holds then. The server refuses some only
// after the client side has finished (see tryRawTLS), so on a loaded
// machine a refusal lands late; held connections are never closed here
// (the tests set long idle timeouts), so the count only falls, and one
// that falls below want is a failure too.
func waitOpen(conns []net.Conn, want int) int {
	open := conns
	for deadline := time.Now().Add(10 * time.Second); ; {
		var still []net.Conn
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, c := range open {
			wg.Go(func() {
				if !closedWithin(c, 250*time.Millisecond) {
					mu.Lock()
					still = append(still, c)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		open = still
		if len(open) <= want || time.Now().After(deadline) {
			return len(open)
		}
	}
}

func getBundle(ctx context.Context, conn *grpc.ClientConn) error {
	_, err := bundlev1.NewBundleClient(conn).GetBundle(ctx, &bundlev1.GetBundleRequest{})
	return err
}

// TestFloodFromOneSource holds idle, certificate-less TLS connections from
// one address beyond its cap: the excess is refused and logged, while an
// agent with an SVID from the same address, the admin socket and a
// certificate-less caller from another address are all served.
func TestFloodFromOneSource(t *testing.T) {
	const perSource, flood = 8, 20
	s, logs := start(t, fmt.Sprintf(`
		max_unauthenticated_per_source = %d
		unauthenticated_idle_timeout = "5m"`, perSource))
	svid := newAgent(t, s)

	conns := make([]net.Conn, flood)
	for i := range conns {
		conns[i] = rawTLS(t, s, source1, nil, true)
	}
	if open := waitOpen(conns, perSource); open != perSource {
		t.Fatalf("%d of %d idle certificate-less connections from one source held, want the cap, %d", open, flood, perSource)
	}
	want := []string{"Refused connection", "pool=unauthenticated", "source=127.0.0.1", fmt.Sprintf("limit=%d", perSource)}
	if !logs.wait(want...) {
		t.Fatalf("no refusal line with %q in the log", want)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// (a) An agent behind the same address connects anew and calls.
	agent := s.DialFrom(t, source1.String(), svid)
	if _, err := entryv1.NewEntryClient(agent).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{}); err != nil {
		t.Fatalf("agent with an SVID from the flooded source: %v", err)
	}
	// (b) The admin socket answers.
	admin := s.Admin(t)
	hr, err := healthpb.NewHealthClient(admin).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("admin health during the flood: %v %v", hr, err)
	}
	if _, err := entryv1.NewEntryClient(admin).ListEntries(ctx, &entryv1.ListEntriesRequest{}); err != nil {
		t.Fatalf("admin ListEntries during the flood: %v", err)
	}
	// (c) GetBundle without a certificate from another address works.
	if err := getBundle(ctx, s.DialFrom(t, source2.String(), nil)); err != nil {
		t.Fatalf("GetBundle from %v during the flood: %v", source2, err)
	}
	// From the flooded address it does not, until the flood leaves.
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	err = getBundle(short, s.DialFrom(t, source1.String(), nil))
	cancelShort()
	if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
		t.Fatalf("GetBundle from the flooded source: got %v, want Unavailable or DeadlineExceeded", err)
	}
	for _, c := range conns {
		c.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for err := errors.New("not tried"); err != nil; {
		if time.Now().After(deadline) {
			t.Fatalf("GetBundle from %v after the flood left: %v", source1, err)
		}
		try, cancelTry := context.WithTimeout(ctx, time.Second)
		err = getBundle(try, s.DialFrom(t, source1.String(), nil))
		cancelTry()
	}
}

// TestTotalCap: past max_connections the listener refuses at accept, and
// the admin socket still answers.
func TestTotalCap(t *testing.T) {
	const total = 4
	s, logs := start(t, fmt.Sprintf("max_connections = %d\nunauthenticated_idle_timeout = \"5m\"", total))
	s.Bundle(t) // over the admin socket: not counted
	var held []net.Conn
	for range total {
		held = append(held, rawTLS(t, s, source2, nil, true))
	}
	bundle := s.Bundle(t)
	c, err := tls.DialWithDialer(dialer(source1), "tcp", s.Addr, tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeAny()))
	if err == nil {
		c.Close()
		t.Fatal("a connection past max_connections completed its TLS handshake")
	}
	if !logs.wait("Refused connection", "pool=all", fmt.Sprintf("limit=%d", total)) {
		t.Fatal("no refusal line for the total cap")
	}
	if open := countOpen(held, 500*time.Millisecond); open != total {
		t.Fatalf("%d of the %d connections within the cap still open", open, total)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(s.Admin(t)).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("admin socket with the TCP side full: %v", err)
	}
}

// TestHandshakeTimeout: a connection that sends nothing, and one that
// finishes TLS but sends no HTTP/2 preface, are both closed, and the
// timeout is logged.
func TestHandshakeTimeout(t *testing.T) {
	// Long enough for a real client's handshake under -race on a loaded
	// 2-CPU machine: its expiry there would be a false failure.
	s, logs := start(t, `handshake_timeout = "2s"`)
	silent, err := dialer(source1).Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	noPreface := rawTLS(t, s, source2, nil, false)
	if !closedWithin(silent, 10*time.Second) {
		t.Fatal("a connection that sent nothing is still open")
	}
	if !closedWithin(noPreface, 10*time.Second) {
		t.Fatal("a TLS connection without an HTTP/2 preface is still open")
	}
	for _, src := range []string{"source=127.0.0.1", "source=127.0.0.2"} {
		if !logs.wait("timed out", src) {
			t.Fatalf("no handshake timeout line for %s", src)
		}
	}
	// A real client finishes within the timeout and is served.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := getBundle(ctx, s.DialFrom(t, source1.String(), nil)); err != nil {
		t.Fatalf("GetBundle with a short handshake timeout: %v", err)
	}
}

// TestIdleTimeout: a connection with no call in flight is closed after the
// idle timeout when it presented no certificate or a workload's SVID; one
// with an open AttestAgent stream, and one that presented an agent's or an
// admin_ids SVID, are not.
func TestIdleTimeout(t *testing.T) {
	// Long enough that a stream's headers, which the client sends right
	// after the handshake, reach the server before it expires on a loaded
	// machine (that expiry would be a false failure); the waits below are
	// multiples of it.
	const idle = 2 * time.Second
	s, logs := start(t, fmt.Sprintf("unauthenticated_idle_timeout = %q", idle), `admin_ids = ["spiffe://example.org/admin"]`)
	agent := newAgent(t, s)
	admin := mint(t, s, "/admin")
	workload := mint(t, s, "/workload")

	mustClose := map[string]net.Conn{
		"certificate-less": rawTLS(t, s, source1, nil, true),
		"workload SVID":    rawTLS(t, s, source1, workload, true),
	}
	mustStay := map[string]net.Conn{
		"agent SVID":     rawTLS(t, s, source1, agent, true),
		"admin_ids SVID": rawTLS(t, s, source1, admin, true),
	}
	// An attesting agent holds its stream open past the idle timeout (as
	// while it gathers evidence); the stream must survive to the result.
	conn := s.DialFrom(t, source2.String(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	token := s.CreateToken(t)
	stream, err := agentv1.NewAgentClient(conn).AttestAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * idle)
	key, csr := servertest.NewCSR(t)
	if err := stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data:   &types.AttestationData{Type: "join_token", Payload: []byte(token)},
		Params: &agentv1.AgentX509SVIDParams{Csr: csr},
	}}}); err != nil {
		t.Fatalf("send after %v idle: %v", 2*idle, err)
	}
	resp, err := stream.Recv()
	if err != nil || resp.GetResult() == nil {
		t.Fatalf("attestation on a stream held past the idle timeout: %v %v", resp, err)
	}
	if _, err := servertest.ParseSVID(resp.GetResult().Svid.CertChain, key); err != nil {
		t.Fatal(err)
	}

	for name, c := range mustClose {
		if !closedWithin(c, 10*time.Second) {
			t.Errorf("an idle connection (%s) is still open", name)
		}
	}
	for name, c := range mustStay {
		if closedWithin(c, 100*time.Millisecond) {
			t.Errorf("the server closed an idle connection (%s)", name)
		}
	}
	if !logs.wait("Closed idle connection", "spiffe_id="+workload.ID.String()) {
		t.Error("no idle close line names the workload's SPIFFE ID")
	}
}

// TestPerIDCap: connections with one workload SVID past
// max_connections_per_id are refused and logged, from any source, while an
// agent from the same source still connects and calls, and a closed
// connection frees its slot.
func TestPerIDCap(t *testing.T) {
	const perID, extra = 4, 3
	s, logs := start(t, fmt.Sprintf("max_connections_per_id = %d\nunauthenticated_idle_timeout = \"5m\"", perID))
	agent := newAgent(t, s)
	workload := mint(t, s, "/workload")

	var conns []net.Conn
	for range perID + extra {
		if c, err := tryRawTLS(t, s, source1, workload, true); err == nil {
			conns = append(conns, c)
		}
	}
	open := waitOpen(conns, perID)
	if open != perID {
		t.Fatalf("%d of %d connections with one workload SVID held, want the per-ID cap, %d", open, perID+extra, perID)
	}
	want := []string{"Refused connection", "pool=verified", "spiffe_id=" + workload.ID.String(), fmt.Sprintf("limit=%d", perID)}
	if !logs.wait(want...) {
		t.Fatalf("no refusal line with %q in the log", want)
	}
	// The cap is the ID's, not the source's.
	if c, err := tryRawTLS(t, s, source2, workload, true); err == nil && !closedWithin(c, 10*time.Second) {
		t.Fatalf("a connection from %v with the capped SVID is held", source2)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := entryv1.NewEntryClient(s.DialFrom(t, source1.String(), agent)).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{}); err != nil {
		t.Fatalf("agent from the source of the capped workload: %v", err)
	}

	// Closing the held ones frees their slots.
	for _, c := range conns {
		c.Close()
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := tryRawTLS(t, s, source2, workload, true)
		if err == nil && !closedWithin(c, 250*time.Millisecond) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the workload still cannot connect after closing its connections")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStreamsPerConnection: one connection, which the caps count once,
// cannot hold more than MaxConcurrentStreams calls; further ones wait.
func TestStreamsPerConnection(t *testing.T) {
	s, _ := start(t, "")
	conn := s.DialFrom(t, source1.String(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Health.Watch is public and stays open until the client ends it.
	client := healthpb.NewHealthClient(conn)
	for i := range endpoints.MaxConcurrentStreams {
		if _, err := client.Watch(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	// The client has the bound from the server's SETTINGS, so it queues
	// the next stream instead of sending it.
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	defer cancelShort()
	_, err := client.Watch(short, &healthpb.HealthCheckRequest{})
	if err == nil {
		t.Fatalf("stream %d opened on one connection", endpoints.MaxConcurrentStreams+1)
	}
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("stream %d: got %v, want it to wait (DeadlineExceeded)", endpoints.MaxConcurrentStreams+1, err)
	}
	// Another connection is not affected.
	if err := getBundle(ctx, s.DialFrom(t, source2.String(), nil)); err != nil {
		t.Fatal(err)
	}
}

// TestHandshakeCap: connections that never finish TLS count against the
// handshake pool of their source; past its cap they are refused at accept
// and logged, and another source still gets through.
func TestHandshakeCap(t *testing.T) {
	const perSource, flood = 4, 10
	s, logs := start(t, fmt.Sprintf("max_handshakes_per_source = %d\nhandshake_timeout = \"5m\"", perSource))
	var conns []net.Conn
	for range flood {
		c, err := dialer(source1).Dial("tcp", s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	if open := waitOpen(conns, perSource); open != perSource {
		t.Fatalf("%d of %d silent connections from one source held, want the cap, %d", open, flood, perSource)
	}
	if !logs.wait("Refused connection", "pool=handshake", "source=127.0.0.1", fmt.Sprintf("limit=%d", perSource)) {
		t.Fatal("no refusal line for the handshake cap")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := getBundle(ctx, s.DialFrom(t, source2.String(), nil)); err != nil {
		t.Fatalf("GetBundle from %v with %v's handshakes full: %v", source2, source1, err)
	}
}

// TestServerSettings: the agent endpoint's first SETTINGS frame bounds
// the streams per connection and allows no HPACK dynamic table, so that
// an idle agent's connection keeps no table of its headers.
func TestServerSettings(t *testing.T) {
	s, _ := start(t, "")
	c := rawTLS(t, s, source1, nil, true)
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	f, err := http2.NewFramer(nil, c).ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		t.Fatalf("first frame %v, want the server's SETTINGS", f)
	}
	if v, ok := sf.Value(http2.SettingHeaderTableSize); !ok || v != 0 {
		t.Errorf("SETTINGS_HEADER_TABLE_SIZE %d (sent: %v), want 0", v, ok)
	}
	if v, ok := sf.Value(http2.SettingMaxConcurrentStreams); !ok || v != endpoints.MaxConcurrentStreams {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS %d (sent: %v), want %d", v, ok, endpoints.MaxConcurrentStreams)
	}
}
