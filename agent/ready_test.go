package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/spiffe-hw/spire-hw/agent/config"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestReadyBeforeAttestation: an agent whose server is not there has not
// attested, so /ready answers 503 with the reason and the Workload API's
// gRPC health service (what `spire-agent healthcheck` asks) NOT_SERVING,
// while /live answers 200.
func TestReadyBeforeAttestation(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "api.sock")
	hp := freePort(t)
	text := fmt.Sprintf(`agent {
    data_dir = %q
    server_address = "127.0.0.1"
    server_port = %d
    trust_domain = "example.org"
    insecure_bootstrap = true
    join_token = "t"
    socket_path = %q
}
plugins {
    KeyManager "memory" {}
    NodeAttestor "join_token" {}
    WorkloadAttestor "unix" {}
}
health_checks {
    listener_enabled = true
    bind_address = "127.0.0.1"
    bind_port = %d
}
`, dir, freePort(t), sock, hp)
	cfg, err := config.Parse("agent.conf", []byte(text), false)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	get := func(path string) (int, string) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", hp, path))
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return resp.StatusCode, string(body)
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s: %v", path, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if code, _ := get("/live"); code != http.StatusOK {
		t.Errorf("/live = %d, want 200", code)
	}
	if code, body := get("/ready"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not attested") {
		t.Errorf("/ready = %d %q, want 503 naming the missing attestation", code, body)
	}

	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var resp *healthpb.HealthCheckResponse
	deadline := time.Now().Add(10 * time.Second)
	for {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err = healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{})
		ccancel()
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("health Check: %v", err)
	}
	if resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health status %v, want NOT_SERVING before attestation", resp.Status)
	}
}
