package plugin

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// floorChildEnv makes this test binary, re-run as a child, serve the
// platform floors instead of running tests: a one-byte echo and a plain
// gRPC health server on two Unix sockets in the named directory. Neither
// is go-plugin nor the SDK, so the rows they give are what any two
// processes pay here, whatever the plugin host does.
const floorChildEnv = "BENCH_PLUGIN_FLOOR_DIR"

// serveFloorChild runs in the child; it returns when the parent goes away.
func serveFloorChild(dir string) {
	echo, err := net.Listen("unix", filepath.Join(dir, "echo.sock"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	g, err := net.Listen("unix", filepath.Join(dir, "grpc.sock"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(g)
	go func() {
		// The parent holds our stdin; EOF means it is gone.
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	for {
		c, err := echo.Accept()
		if err != nil {
			os.Exit(0)
		}
		go func() {
			b := make([]byte, 1)
			for {
				if _, err := c.Read(b); err != nil {
					return
				}
				if _, err := c.Write(b); err != nil {
					return
				}
			}
		}()
	}
}

// floors starts the child and returns a call for each floor.
func floors(t *testing.T) (echo, unary func() error) {
	t.Helper()
	dir, err := os.MkdirTemp("", "floor")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), floorChildEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	var ec net.Conn
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ec, err = net.Dial("unix", filepath.Join(dir, "echo.sock")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("floor child: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() { ec.Close() })
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "grpc.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	hc := healthpb.NewHealthClient(conn)
	ctx := context.Background()
	b := []byte{1}
	echo = func() error {
		if _, err := ec.Write(b); err != nil {
			return err
		}
		_, err := io.ReadFull(ec, b)
		return err
	}
	unary = func() error {
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	return echo, unary
}
