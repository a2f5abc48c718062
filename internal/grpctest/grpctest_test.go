package grpctest_test

import (
	"context"
	"testing"

	"github.com/spiffe-hw/spire-hw/internal/grpctest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func register(s *grpc.Server) { healthpb.RegisterHealthServer(s, health.NewServer()) }

func check(t *testing.T, conn grpc.ClientConnInterface) {
	t.Helper()
	resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("status = %v, want SERVING", resp.Status)
	}
}

func TestServe(t *testing.T) {
	check(t, grpctest.Serve(t, register))
}

// A name long enough that t.TempDir would make the socket path too long.
func TestServeWithAVeryLongTestNameThatWouldOverflowTheUnixSocketPathLimitOfOneHundredAndEightBytes(t *testing.T) {
	t.Run("and a subtest with a long name of its own as well", func(t *testing.T) {
		check(t, grpctest.Serve(t, register))
	})
}

func TestDialAgain(t *testing.T) {
	sock := grpctest.Start(t, register)
	for range 2 {
		check(t, grpctest.Dial(t, sock))
	}
}
