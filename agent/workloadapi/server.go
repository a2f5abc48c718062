package workloadapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/spiffe-hw/spire-hw/agent/peer"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Listen creates the Workload API socket: the parent directory is created
// 0755, a stale socket left by a previous run is removed, and the socket is
// made 0777 like SPIRE's public socket (every local process may ask; the
// answer depends on who asks).
func Listen(socketPath string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(socketPath), 0o755); err != nil {
		return nil, fmt.Errorf("workloadapi: create socket directory: %w", err)
	}
	if fi, err := os.Lstat(socketPath); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("workloadapi: %s exists and is not a socket; remove it or choose another socket_path", socketPath)
		}
		if err := os.Remove(socketPath); err != nil {
			return nil, fmt.Errorf("workloadapi: remove stale socket: %w", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("workloadapi: stat socket: %w", err)
	}
	// Create the socket with its final mode so there is no moment at which
	// it exists with the process umask's permissions.
	old := unix.Umask(0)
	l, err := net.Listen("unix", socketPath)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("workloadapi: listen: %w", err)
	}
	if err := os.Chmod(socketPath, 0o777); err != nil {
		l.Close()
		return nil, fmt.Errorf("workloadapi: chmod socket: %w", err)
	}
	return l, nil
}

// NewServer returns a gRPC server that identifies each caller through its
// pidfd and serves h, plus the standard gRPC health service (which SPIRE's
// newer healthcheck command queries). Further server options are appended.
func NewServer(h *Handler, opts ...grpc.ServerOption) (*grpc.Server, error) {
	creds, err := peer.NewCredentials(h.c.Log)
	if err != nil {
		return nil, fmt.Errorf("workloadapi: %w", err)
	}
	s := grpc.NewServer(append([]grpc.ServerOption{grpc.Creds(creds)}, opts...)...)
	workload.RegisterSpiffeWorkloadAPIServer(s, h)
	healthpb.RegisterHealthServer(s, health.NewServer())
	return s, nil
}

// Serve listens on socketPath and serves h until ctx is done; opts are
// added to the gRPC server's (interceptors, for instance).
func Serve(ctx context.Context, socketPath string, h *Handler, opts ...grpc.ServerOption) error {
	l, err := Listen(socketPath)
	if err != nil {
		return err
	}
	s, err := NewServer(h, opts...)
	if err != nil {
		l.Close()
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(l) }()
	select {
	case <-ctx.Done():
		// Streams never end on their own; Stop rather than wait for them.
		s.Stop()
		<-errc
		return nil
	case err := <-errc:
		return fmt.Errorf("workloadapi: serve: %w", err)
	}
}

func closePIDFD(fd int) { _ = unix.Close(fd) }
