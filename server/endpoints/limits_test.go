package endpoints_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/endpoints"
	"github.com/spiffe-hw/spire-hw/server/servertest"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

var (
	source1 = net.IPv4(127, 0, 0, 1)
	// source2 is a second source address: Linux routes all of 127/8 to lo.
	source2 = net.IPv4(127, 0, 0, 2)
)

// logBuffer collects the server's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the lines that contain every one of parts.
func (b *logBuffer) lines(parts ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for line := range strings.SplitSeq(b.buf.String(), "\n") {
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

func start(t *testing.T, limits string) (*servertest.Server, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	s := servertest.Start(t, servertest.Options{Log: logs, ServerExtra: "connection_limits {\n" + limits + "\n}"})
	return s, logs
}

func dialer(from net.IP) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: from}, Timeout: 5 * time.Second}
}

// dial is servertest.Dial from a chosen source address.
func dial(t *testing.T, s *servertest.Server, svid *x509svid.SVID, from net.IP) *grpc.ClientConn {
	t.Helper()
	bundle := s.Bundle(t)
	var tlsCfg *tls.Config
	if svid != nil {
		tlsCfg = tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeAny())
	} else {
		tlsCfg = tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeAny())
	}
	d := dialer(from)
	conn, err := grpc.NewClient(s.Addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// newAgent attests an agent from source2, so that the flooded source1 holds
// no connection of the test's own, and returns its SVID.
func newAgent(t *testing.T, s *servertest.Server) *x509svid.SVID {
	t.Helper()
	conn := dial(t, s, nil, source2)
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
	bundle := s.Bundle(t)
	cfg := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeAny())
	if svid != nil {
		cfg = tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeAny())
	}
	// gRPC refuses a TLS client that does not offer HTTP/2 by ALPN.
	cfg.NextProtos = []string{"h2"}
	c, err := tls.DialWithDialer(dialer(from), "tcp", s.Addr, cfg)
	if err != nil {
		t.Fatalf("TLS dial from %v: %v", from, err)
	}
	t.Cleanup(func() { c.Close() })
	if preface {
		if _, err := c.Write(http2Preface); err != nil {
			t.Fatalf("write preface: %v", err)
		}
	}
	return c
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
	if open := countOpen(conns, time.Second); open != perSource {
		t.Fatalf("%d of %d idle certificate-less connections from one source held, want the cap, %d", open, flood, perSource)
	}
	want := []string{"Refused connection", "pool=unauthenticated", "source=127.0.0.1", fmt.Sprintf("limit=%d", perSource)}
	if len(logs.lines(want...)) == 0 {
		t.Fatalf("no refusal line with %q in the log", want)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// (a) An agent behind the same address connects anew and calls.
	agent := dial(t, s, svid, source1)
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
	if err := getBundle(ctx, dial(t, s, nil, source2)); err != nil {
		t.Fatalf("GetBundle from %v during the flood: %v", source2, err)
	}
	// From the flooded address it does not, until the flood leaves.
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	err = getBundle(short, dial(t, s, nil, source1))
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
		err = getBundle(try, dial(t, s, nil, source1))
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
	if len(logs.lines("Refused connection", "pool=all", fmt.Sprintf("limit=%d", total))) == 0 {
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
	s, logs := start(t, `handshake_timeout = "300ms"`)
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
		if len(logs.lines("timed out", src)) == 0 {
			t.Fatalf("no handshake timeout line for %s", src)
		}
	}
	// A real client finishes within the timeout and is served.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := getBundle(ctx, dial(t, s, nil, source1)); err != nil {
		t.Fatalf("GetBundle with a short handshake timeout: %v", err)
	}
}

// TestIdleTimeout: an unauthenticated connection with no call in flight is
// closed after the idle timeout; one with an open AttestAgent stream, and
// one that presented an SVID, are not.
func TestIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	s, _ := start(t, fmt.Sprintf("unauthenticated_idle_timeout = %q", idle))
	svid := newAgent(t, s)

	unauth := rawTLS(t, s, source1, nil, true)
	authed := rawTLS(t, s, source1, svid, true)
	if !closedWithin(unauth, 10*time.Second) {
		t.Fatal("an idle certificate-less connection is still open")
	}
	if closedWithin(authed, 5*idle) {
		t.Fatal("the server closed an idle connection that presented an SVID")
	}

	// An attesting agent holds its stream open past the idle timeout (as
	// while it gathers evidence); the stream must survive to the result.
	conn := dial(t, s, nil, source2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	token := s.CreateToken(t)
	stream, err := agentv1.NewAgentClient(conn).AttestAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The client sends the stream's headers at once, so the call is in
	// flight on the server while the agent waits here.
	time.Sleep(5 * idle)
	key, csr := servertest.NewCSR(t)
	if err := stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data:   &types.AttestationData{Type: "join_token", Payload: []byte(token)},
		Params: &agentv1.AgentX509SVIDParams{Csr: csr},
	}}}); err != nil {
		t.Fatalf("send after %v idle: %v", 5*idle, err)
	}
	resp, err := stream.Recv()
	if err != nil || resp.GetResult() == nil {
		t.Fatalf("attestation on a stream held past the idle timeout: %v %v", resp, err)
	}
	if _, err := servertest.ParseSVID(resp.GetResult().Svid.CertChain, key); err != nil {
		t.Fatal(err)
	}
}

// TestStreamsPerConnection: one connection, which the caps count once,
// cannot hold more than MaxConcurrentStreams calls; further ones wait.
func TestStreamsPerConnection(t *testing.T) {
	s, _ := start(t, "")
	conn := dial(t, s, nil, source1)
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
	if err := getBundle(ctx, dial(t, s, nil, source2)); err != nil {
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
	if open := countOpen(conns, time.Second); open != perSource {
		t.Fatalf("%d of %d silent connections from one source held, want the cap, %d", open, flood, perSource)
	}
	if len(logs.lines("Refused connection", "pool=handshake", "source=127.0.0.1", fmt.Sprintf("limit=%d", perSource))) == 0 {
		t.Fatal("no refusal line for the handshake cap")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := getBundle(ctx, dial(t, s, nil, source2)); err != nil {
		t.Fatalf("GetBundle from %v with %v's handshakes full: %v", source2, source1, err)
	}
}
