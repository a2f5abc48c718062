package workloadapi

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
)

// startServer serves h on a fresh socket and returns its path.
func startServer(t testing.TB, h *Handler, opts ...grpc.ServerOption) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wlapi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "public", "api.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(h, opts...)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return path
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
