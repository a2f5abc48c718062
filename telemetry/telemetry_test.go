package telemetry

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// A scrape shows the runtime collectors and every call counted by code; a
// port in use stops Listen with the address in the error.
func TestEndpoint(t *testing.T) {
	reg := NewRegistry()
	rpc := NewRPC(reg, "test")
	e, err := Listen(hclconf.Prometheus{Host: "127.0.0.1", Port: 0}, reg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		if err := e.Close(); err != nil {
			t.Errorf("Close after Serve: %v", err)
		}
	}()

	info := &grpc.UnaryServerInfo{FullMethod: "/svc/M"}
	ok := func(context.Context, any) (any, error) { return "r", nil }
	denied := func(context.Context, any) (any, error) { return nil, status.Error(codes.PermissionDenied, "no") }
	for _, h := range []grpc.UnaryHandler{ok, ok, denied} {
		_, _ = rpc.Unary(context.Background(), nil, info, h)
	}
	_ = rpc.Stream(nil, nil, &grpc.StreamServerInfo{FullMethod: "/svc/S"}, func(any, grpc.ServerStream) error { return nil })

	resp, err := http.Get("http://" + e.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)
	for _, want := range []string{
		`test_rpc_calls_total{code="OK",method="/svc/M"} 2`,
		`test_rpc_calls_total{code="PermissionDenied",method="/svc/M"} 1`,
		`test_rpc_calls_total{code="OK",method="/svc/S"} 1`,
		`test_rpc_duration_seconds_count{method="/svc/M"} 3`,
		"go_goroutines ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}

	port := e.Addr().(*net.TCPAddr).Port
	_, err = Listen(hclconf.Prometheus{Host: "127.0.0.1", Port: port}, NewRegistry(), quiet)
	if err == nil || !strings.Contains(err.Error(), e.Addr().String()) {
		t.Errorf("second Listen on %s: %v", e.Addr(), err)
	}
}
