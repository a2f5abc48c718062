package workloadapi

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	wltest "github.com/spiffe-hw/spire-hw/agent/workloadapi/workloadapitest"
)

// serveIn runs Serve on sock until the returned stop is called, and waits
// for the socket to answer.
func serveIn(t *testing.T, sock string) (stop func() error) {
	t.Helper()
	h := New(Config{Manager: wltest.NewManager(t, wltest.NewCA(t, td)), TrustDomain: td, Log: quietLog()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ServeConfig{SocketPath: sock}, h) }()
	waitFor(t, 10*time.Second, "the socket did not appear", func() bool {
		fi, err := os.Lstat(sock)
		return err == nil && fi.Mode().Type() == fs.ModeSocket
	})
	return func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("Serve did not return")
		}
	}
}

// A Workload API socket in a shared sticky directory (socket_path =
// "/tmp/agent.sock"): the directory keeps 1777 through start and shutdown,
// and shutdown removes only the socket.
func TestServeInStickyDirectoryLeavesItAlone(t *testing.T) {
	dir, err := os.MkdirTemp("", "wlsticky")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, fs.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	want := fs.ModeDir | fs.ModeSticky | 0o777
	sock := filepath.Join(dir, "agent.sock")
	stop := serveIn(t, sock)
	if fi, _ := os.Stat(dir); fi.Mode() != want {
		t.Errorf("after start: directory %v, want %v", fi.Mode(), want)
	}
	if fi, _ := os.Lstat(sock); fi.Mode() != fs.ModeSocket|0o777 {
		t.Errorf("socket %v, want srwxrwxrwx", fi.Mode())
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode() != want {
		t.Errorf("after shutdown: directory %v, want %v", fi.Mode(), want)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket after shutdown: %v, want removed", err)
	}
}

// A second agent on the same socket_path fails to start and the first one
// keeps serving its workloads.
func TestServeRefusesALiveSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "wllive")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "agent.sock")
	stop := serveIn(t, sock)
	defer stop()
	h := New(Config{Manager: wltest.NewManager(t, wltest.NewCA(t, td)), TrustDomain: td, Log: quietLog()})
	err = Serve(context.Background(), ServeConfig{SocketPath: sock}, h)
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Serve: %v, want an in-use error", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// No entry matches this process, so the answer is PermissionDenied:
	// an answer from the first agent, which is what is asserted.
	if _, err := workloadapi.FetchX509Bundles(ctx, workloadapi.WithAddr("unix://"+sock)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("the first agent no longer serves: %v", err)
	}
}

// A regular file at socket_path: the agent refuses to start, naming the
// path, and the file survives.
func TestServeRefusesARegularFile(t *testing.T) {
	dir, err := os.MkdirTemp("", "wlfile")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "agent.sock")
	if err := os.WriteFile(file, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := New(Config{Manager: wltest.NewManager(t, wltest.NewCA(t, td)), TrustDomain: td, Log: quietLog()})
	err = Serve(context.Background(), ServeConfig{SocketPath: file}, h)
	if err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Serve over a regular file: %v", err)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "precious" {
		t.Fatalf("file after refusal: %q, %v", b, err)
	}
}
