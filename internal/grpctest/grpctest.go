// Package grpctest serves gRPC services on a real Unix socket for tests.
//
// An adapter test registers the plugin's service (or a host service) on a
// server and talks to it through a client connection over a socket, so the
// bytes cross the wire as they do between SPIRE and a plugin process:
//
//	conn := grpctest.Serve(t, func(s *grpc.Server) { notifierv1.RegisterNotifierServer(s, p) })
//
// Everything is torn down at the test's cleanup: connections are closed
// before the server stops, and the server's goroutine has returned before
// the socket's directory is removed.
package grpctest

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Serve starts a gRPC server with the services register adds, and returns a
// connection to it that is closed at cleanup.
func Serve(tb testing.TB, register func(*grpc.Server)) *grpc.ClientConn {
	tb.Helper()
	return Dial(tb, Start(tb, register))
}

// Start starts a gRPC server with the services register adds on a fresh
// Unix socket and returns the socket's path. The server stops at cleanup.
// A test that needs several connections to one server (a restarted client)
// calls Dial on the path once for each.
func Start(tb testing.TB, register func(*grpc.Server)) string {
	tb.Helper()
	// Not t.TempDir: with a long test name its path can pass the 108 bytes
	// a Unix socket path may have.
	dir, err := os.MkdirTemp("", "g")
	if err != nil {
		tb.Fatalf("grpctest: %v", err)
	}
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		os.RemoveAll(dir)
		tb.Fatalf("grpctest: %v", err)
	}
	srv := grpc.NewServer()
	register(srv)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	tb.Cleanup(func() {
		srv.Stop()
		<-done
		os.RemoveAll(dir)
	})
	return sock
}

// Dial connects to the gRPC server on the Unix socket at sock, without
// transport security, and closes the connection at cleanup.
func Dial(tb testing.TB, sock string) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatalf("grpctest: %v", err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}
