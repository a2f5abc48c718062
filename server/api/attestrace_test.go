package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// serveAPI serves a's services over a real gRPC server on a loopback TCP
// port, with the API's interceptors as the server wires them, and returns
// a plaintext client connection from 127.0.0.1 (AttestAgent is public, so
// no TLS is needed to reach it). The server stops when the test ends.
func serveAPI(t *testing.T, a *API) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(ServerCodec(), grpc.UnaryInterceptor(a.UnaryInterceptor), grpc.StreamInterceptor(a.StreamInterceptor))
	a.Register(srv)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
		<-served
	})
	return conn
}

// testCSR returns a valid DER CSR for a fresh key.
func testCSR(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// goroutinesIn counts the goroutines whose stack has fn in it.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			count++
		}
	}
	return count
}

// waitGoroutines waits up to 10 s for ok to hold of the goroutine count,
// and fails with the stacks if it never does: streams are torn down
// asynchronously after the client has its status.
func waitGoroutines(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%s after 10 s; goroutines:\n%s", what, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAttestAgentFirstMessageAtTimeout sends AttestAgent's first message
// right around a short message timeout, over real gRPC, so that it often
// reaches the Recv goroutine that recvWithin abandoned when the timer won:
// under -race, nothing that goroutine does may race with the interceptor,
// which reads the first request for the security and audit logs once the
// handler has returned. Each stream must end with the timeout or with the
// handler's verdict on the message, and no goroutine of the handler's may
// outlive its stream.
func TestAttestAgentFirstMessageAtTimeout(t *testing.T) {
	const timeout = 10 * time.Millisecond
	a := New(Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), AttestMessageTimeout: timeout, AuditLog: true,
		Log: slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	conn := serveAPI(t, a)
	client := agentv1.NewAgentClient(conn)
	// The message names no attestor the server has, so a handler that
	// receives it refuses at once (FailedPrecondition) without needing a
	// datastore; the CSR is valid, so the refusal is the attestor's.
	msg := attestRequest("no_such_attestor", []byte("payload-of-the-race"), testCSR(t))
	// Warm the connection, so that the baseline counts its goroutines.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := client.CountAgents(ctx, &agentv1.CountAgentsRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("CountAgents over TCP without a certificate = %v, want PermissionDenied", err)
	}
	baseline := runtime.NumGoroutine()

	const streams, workers = 120, 6
	var mu sync.Mutex
	got := map[codes.Code]int{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < streams; i += workers {
				// Delays from 0 to 2×timeout in steps of timeout/10: the
				// send lands before, at and after the server's timer.
				delay := time.Duration(i%21) * timeout / 10
				stream, err := client.AttestAgent(ctx)
				if err != nil {
					t.Errorf("open stream: %v", err)
					return
				}
				time.Sleep(delay)
				_ = stream.Send(msg) // io.EOF when the server has ended the stream; Recv has the status
				_, err = stream.Recv()
				code := status.Code(err)
				switch {
				case code == codes.DeadlineExceeded && strings.Contains(err.Error(), "no attestation parameters within"):
				case code == codes.FailedPrecondition && strings.Contains(err.Error(), `"no_such_attestor"`):
				default:
					t.Errorf("stream %d (first message after %v): %v, want the timeout or FailedPrecondition", i, delay, err)
				}
				mu.Lock()
				got[code]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("outcomes: %v", got)
	waitGoroutines(t, "a recvWithin goroutine outlived its stream", func() bool { return goroutinesIn("api.recvWithin") == 0 })
	waitGoroutines(t, "goroutines left above the baseline", func() bool { return runtime.NumGoroutine() <= baseline })
}
