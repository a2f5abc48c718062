package endpoints_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe-hw/spire-hw/server/api"
	"github.com/spiffe-hw/spire-hw/server/endpoints"
	"github.com/spiffe-hw/spire-hw/server/servertest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// registered reports whether reg gathers the listener's connection gauge.
func registered(t *testing.T, reg *prometheus.Registry) bool {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == endpoints.MetricsPrefix+"_tcp_connections" {
			return true
		}
	}
	return false
}

// TestSequentialServersShareRegistry: two endpoints, one after the other,
// on one Prometheus registry (as an embedder that restarts the server
// does). The second registers its collector because the first's Serve
// gave it back.
func TestSequentialServersShareRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := range 2 {
		// Unix socket paths are limited to 108 bytes: t.TempDir is too long.
		dir, err := os.MkdirTemp("", "ep")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		socket := filepath.Join(dir, "api.sock")
		e, err := endpoints.New(endpoints.Config{
			TCPAddr:     "127.0.0.1:0",
			SocketPath:  socket,
			API:         api.New(api.Config{TrustDomain: servertest.TrustDomain, Log: log}),
			Certificate: func() (*tls.Certificate, error) { return nil, errors.New("no certificate in this test") },
			TrustDomain: servertest.TrustDomain,
			Registry:    reg,
			Log:         log,
		})
		if err != nil {
			t.Fatalf("server %d on the shared registry: %v", i+1, err)
		}
		if !registered(t, reg) {
			t.Fatalf("server %d: no connection metrics in the registry", i+1)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Serve(ctx) }()
		// Serving: the admin socket answers.
		conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		callCtx, cancelCall := context.WithTimeout(ctx, 10*time.Second)
		_, err = healthpb.NewHealthClient(conn).Check(callCtx, &healthpb.HealthCheckRequest{})
		cancelCall()
		conn.Close()
		if err != nil {
			t.Fatalf("server %d: health over the admin socket: %v", i+1, err)
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("server %d: Serve: %v", i+1, err)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("server %d: Serve did not return", i+1)
		}
		if registered(t, reg) {
			t.Fatalf("server %d: connection metrics still registered after Serve returned", i+1)
		}
	}
}
