package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/spiffe-hw/spire-hw/server/config"
)

// filesConf is a server config with the socket and data_dir where the test
// puts them and SQLite inside data_dir.
func filesConf(t *testing.T, socket, dataDir string) *config.Config {
	t.Helper()
	text := fmt.Sprintf(`server {
    bind_address = "127.0.0.1"
    bind_port = 0
    socket_path = %q
    trust_domain = "example.org"
    data_dir = %q
}
plugins {
    DataStore "sql" { plugin_data { database_type = "sqlite3" connection_string = %q } }
    KeyManager "memory" {}
    NodeAttestor "join_token" {}
}
`, socket, dataDir, filepath.Join(dataDir, "datastore.sqlite3"))
	cfg, err := config.Parse("server.conf", []byte(text), false)
	if err != nil {
		t.Fatalf("parse:\n%s\n%v", text, err)
	}
	return cfg
}

// shortTemp is a directory whose socket paths fit sun_path.
func shortTemp(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "srvf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func modeOf(t *testing.T, p string) fs.FileMode {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode()
}

// runServer starts the server and returns a stop that waits for Run.
func runServer(t *testing.T, cfg *config.Config, log *slog.Logger) (stop func()) {
	t.Helper()
	s, err := New(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("Run did not return")
		}
	}
}

// createToken proves the admin socket serves, and writes a join token (the
// secret the SQLite files must keep from other users).
func createToken(t *testing.T, socket string) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := agentv1.NewAgentClient(conn).CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 600}); err != nil {
		t.Fatalf("CreateJoinToken over the admin socket: %v", err)
	}
}

// The files the server creates, under umask 0 (the widest): the admin
// socket's directory 0770, the socket 0770, data_dir 0700, the SQLite
// database and its -wal and -shm 0600. Shutdown removes the socket.
func TestServerFilesUnderUmaskZero(t *testing.T) {
	base := shortTemp(t)
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	socket := filepath.Join(base, "private", "api.sock")
	dataDir := filepath.Join(base, "data")
	stop := runServer(t, filesConf(t, socket, dataDir), slog.New(slog.DiscardHandler))
	createToken(t, socket)
	for p, want := range map[string]fs.FileMode{
		filepath.Join(base, "private"): fs.ModeDir | 0o770,
		socket:                         fs.ModeSocket | 0o770,
		dataDir:                        fs.ModeDir | 0o700,
		filepath.Join(dataDir, "datastore.sqlite3"):     0o600,
		filepath.Join(dataDir, "datastore.sqlite3-wal"): 0o600,
		filepath.Join(dataDir, "datastore.sqlite3-shm"): 0o600,
	} {
		if got := modeOf(t, p); got != want {
			t.Errorf("%s: %v, want %v", strings.TrimPrefix(p, base), got, want)
		}
	}
	stop()
	if _, err := os.Lstat(socket); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket after shutdown: %v, want removed", err)
	}
}

// socket_path in a shared sticky directory, as /tmp: the directory keeps
// 1777 (sticky bit included) through start and shutdown, and a data_dir
// that already exists 0755 keeps its mode, with a warning.
func TestServerLeavesExistingDirectoriesAlone(t *testing.T) {
	base := shortTemp(t)
	shared := filepath.Join(base, "tmp")
	dataDir := filepath.Join(base, "data")
	for d, m := range map[string]fs.FileMode{shared: fs.ModeSticky | 0o777, dataDir: 0o755} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, m); err != nil {
			t.Fatal(err)
		}
	}
	socket := filepath.Join(shared, "api.sock")
	var logs bytes.Buffer
	stop := runServer(t, filesConf(t, socket, dataDir), slog.New(slog.NewTextHandler(&logs, nil)))
	createToken(t, socket)
	if got := modeOf(t, shared); got != fs.ModeDir|fs.ModeSticky|0o777 {
		t.Errorf("after start: shared directory %v, want dtrwxrwxrwx", got)
	}
	stop()
	if got := modeOf(t, shared); got != fs.ModeDir|fs.ModeSticky|0o777 {
		t.Errorf("after shutdown: shared directory %v, want dtrwxrwxrwx", got)
	}
	if _, err := os.Lstat(socket); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket after shutdown: %v, want removed", err)
	}
	if got := modeOf(t, dataDir); got != fs.ModeDir|0o755 {
		t.Errorf("existing data_dir became %v", got)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "chmod 700 "+dataDir) {
		t.Errorf("no warning about the 0755 data_dir; logs:\n%s", logs.String())
	}
	if got := modeOf(t, filepath.Join(dataDir, "datastore.sqlite3")); got != 0o600 {
		t.Errorf("database in an existing data_dir: %v, want 0600", got)
	}
}

// A regular file at socket_path: the server refuses to start, the error
// names the path, and the file survives.
func TestServerRefusesARegularFileAtSocketPath(t *testing.T) {
	base := shortTemp(t)
	socket := filepath.Join(base, "api.sock")
	if err := os.WriteFile(socket, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := New(context.Background(), filesConf(t, socket, filepath.Join(base, "data")), slog.New(slog.DiscardHandler))
	if err == nil {
		s.close()
		t.Fatal("the server started over a regular file")
	}
	if !strings.Contains(err.Error(), socket) || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("error %q should name %s and say it is not a socket", err, socket)
	}
	if b, err := os.ReadFile(socket); err != nil || string(b) != "precious" {
		t.Errorf("file after refusal: %q, %v", b, err)
	}
	if got := modeOf(t, socket); got != 0o644 {
		t.Errorf("file mode changed to %v", got)
	}
}
