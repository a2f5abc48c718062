package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
)

// bundleServer answers GetBundle with its own index as the sequence
// number, so that the test sees which server took a call.
type bundleServer struct {
	bundlev1.UnimplementedBundleServer
	index uint64
	root  []byte
	// unavailable makes it answer as a server whose database is away.
	unavailable *atomic.Bool
}

func (s *bundleServer) GetBundle(context.Context, *bundlev1.GetBundleRequest) (*types.Bundle, error) {
	if s.unavailable.Load() {
		return nil, status.Error(codes.Unavailable, "fetch attested node: database unavailable")
	}
	return &types.Bundle{TrustDomain: "example.org", SequenceNumber: s.index,
		X509Authorities: []*types.X509Certificate{{Asn1: s.root}}}, nil
}

// syncBuffer is a log destination the client's goroutines write to while
// the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestFailoverAcrossAddresses: three real gRPC servers (mutual TLS, the
// server SPIFFE ID) on 127.0.0.2-4, one name resolving to the three, as a
// DNS name with three A records does. Calls are spread over all three;
// after one server is stopped every call is answered by the other two
// (the client holds the SVID it had: there is nothing to attest), the loss is
// logged with the lost address, and a server started again on that
// address takes calls again; a server answering Unavailable has its calls
// retried on the others.
func TestFailoverAcrossAddresses(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	root, err := testpki.NewRoot("root")
	if err != nil {
		t.Fatal(err)
	}
	serverCert, serverKey, err := root.Issue(testpki.Leaf{
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		URIs:        []*url.URL{ServerID(td).URL()},
	})
	if err != nil {
		t.Fatal(err)
	}
	agentID := spiffeid.RequireFromPath(td, "/spire/agent/join_token/a")
	agentCert, agentKey, err := root.Issue(testpki.Leaf{URIs: []*url.URL{agentID.URL()}})
	if err != nil {
		t.Fatal(err)
	}
	serverTLS := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{serverCert.Raw}, PrivateKey: serverKey, Leaf: serverCert}},
		ClientAuth:   tls.RequireAnyClientCert,
	}

	// One port on three loopback addresses, as servers behind one name.
	l0, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("loopback 127.0.0.2 not usable: %v", err)
	}
	port := l0.Addr().(*net.TCPAddr).Port
	listeners := []net.Listener{l0}
	for _, ip := range []string{"127.0.0.3", "127.0.0.4"} {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
		if err != nil {
			t.Skipf("port %d not free on %s: %v", port, ip, err)
		}
		listeners = append(listeners, l)
	}
	unavailable := make([]atomic.Bool, len(listeners))
	serve := func(i uint64, l net.Listener) *grpc.Server {
		s := grpc.NewServer(grpc.Creds(credentials.NewTLS(serverTLS)))
		bundlev1.RegisterBundleServer(s, &bundleServer{index: i, root: root.Cert.Raw, unavailable: &unavailable[i]})
		go func() { _ = s.Serve(l) }()
		t.Cleanup(s.Stop)
		return s
	}
	servers := make([]*grpc.Server, len(listeners))
	var addrs []resolver.Address
	for i, l := range listeners {
		servers[i] = serve(uint64(i), l)
		addrs = append(addrs, resolver.Address{Addr: l.Addr().String()})
	}

	r := manual.NewBuilderWithScheme("failover")
	r.InitialState(resolver.State{Addresses: addrs})
	logs := &syncBuffer{}
	c, err := New(Config{ServerAddress: "failover:///spire-server.example.org:" + fmt.Sprint(port), TrustDomain: td,
		CallTimeout: 20 * time.Second, Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	c.dialOpts = []grpc.DialOption{grpc.WithResolvers(r)}
	defer c.Close()
	svid := &x509svid.SVID{ID: agentID, Certificates: []*x509.Certificate{agentCert}, PrivateKey: agentKey}
	c.SetSVID(svid)
	c.SetBundle(x509bundle.FromX509Authorities(td, []*x509.Certificate{root.Cert}))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// calls makes n calls and counts them by the server that answered;
	// failed ones count under failedCall.
	const failedCall = 99
	calls := func(n int) map[uint64]int {
		by := map[uint64]int{}
		for range n {
			_, b, err := c.GetBundle(ctx)
			if err != nil {
				by[failedCall]++
				continue
			}
			by[b.SequenceNumber]++
		}
		return by
	}
	// round_robin sends calls to every connected server; the three
	// connect at their own pace, so wait until all have answered.
	deadline := time.Now().Add(20 * time.Second)
	for by := calls(30); len(by) < 3 || by[failedCall] > 0; by = calls(30) {
		if time.Now().After(deadline) {
			t.Fatalf("calls reached only servers %v of 3", by)
		}
	}

	// A server that dies: its connection ends, the calls go on.
	servers[1].Stop()
	lost := listeners[1].Addr().String()
	var by map[uint64]int
	for try := 0; ; try++ {
		// A call on the connection as it closes fails (the
		// manager's next round retries it); once gRPC has seen the
		// connection end, every call goes to the two others.
		by = calls(60)
		if (by[1] == 0 && by[failedCall] == 0) || try > 20 {
			break
		}
	}
	if by[1] != 0 || by[failedCall] != 0 || by[0] == 0 || by[2] == 0 {
		t.Fatalf("after server 1 stopped, calls by server: %v; want servers 0 and 2 only", by)
	}
	c.mu.Lock()
	up := c.conns.connected()
	c.mu.Unlock()
	if len(up) != 2 || strings.Contains(strings.Join(up, " "), lost) {
		t.Fatalf("connected to %v after %s stopped; want the two others", up, lost)
	}
	if out := logs.String(); !strings.Contains(out, "Lost connection to server") || !strings.Contains(out, lost) {
		t.Fatalf("no log of the lost connection to %s:\n%s", lost, out)
	}

	// The server comes back on its address: gRPC reconnects by itself.
	l, err := net.Listen("tcp", lost)
	if err != nil {
		t.Fatalf("listen again on %s: %v", lost, err)
	}
	serve(1, l)
	deadline = time.Now().Add(30 * time.Second)
	for by = calls(30); by[1] == 0 || by[failedCall] > 0; by = calls(30) {
		if time.Now().After(deadline) {
			t.Fatalf("server 1 back on %s takes no calls: %v", lost, by)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "Reconnected to server") {
		t.Fatalf("no log of the reconnection:\n%s", logs.String())
	}

	// A server up but answering Unavailable (its database away, the
	// caller's node never read): every call is retried on another.
	unavailable[0].Store(true)
	if by = calls(60); by[failedCall] != 0 || by[0] != 0 {
		t.Fatalf("with server 0 answering Unavailable, calls by server: %v; want all on 1 and 2", by)
	}
}

func TestTarget(t *testing.T) {
	for in, want := range map[string]string{
		"spire-server:8081":        "dns:///spire-server:8081",
		"10.0.0.1:8081":            "dns:///10.0.0.1:8081",
		"[::1]:8081":               "dns:///[::1]:8081",
		"dns:///spire-server:8081": "dns:///spire-server:8081",
		"unix:///run/server.sock":  "unix:///run/server.sock",
	} {
		if got := target(in); got != want {
			t.Errorf("target(%q) = %q, want %q", in, got, want)
		}
	}
}
