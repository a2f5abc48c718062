package peer

import (
	"github.com/spiffe-hw/spire-hw/sim/simtest"

	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestMain(m *testing.M) {
	if sock := os.Getenv("PEER_TEST_CONNECT"); sock != "" {
		// Helper: connect, say so, wait for stdin to close, exit.
		c, err := net.Dial("unix", sock)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("connected")
		_, _ = io.Copy(io.Discard, os.Stdin)
		c.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func listen(t *testing.T) (net.Listener, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "peer")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

func creds(t *testing.T, m method) *Credentials {
	t.Helper()
	c, err := NewCredentials(quiet())
	if err != nil {
		t.Fatal(err)
	}
	if m != 0 {
		c.method = m
	}
	return c
}

func TestProbePrefersSOPeerPIDFD(t *testing.T) {
	c := creds(t, 0)
	// This kernel is >= 6.5 in CI; on older ones the fallback is expected.
	t.Logf("method: %s", c.Method())
	if c.Method() != "SO_PEERPIDFD" && c.Method() != "pidfd_open" {
		t.Fatalf("unexpected method %q", c.Method())
	}
}

// handshakeWithChild starts a child that connects to a fresh socket and
// returns the server side of the handshake and the running child.
func handshakeWithChild(t *testing.T, m method) (*Info, net.Conn, *exec.Cmd, io.WriteCloser) {
	t.Helper()
	l, path := listen(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "PEER_TEST_CONNECT="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); _ = cmd.Wait() })
	raw, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "connected\n" {
		t.Fatalf("child said %q", line)
	}
	conn, ai, err := creds(t, m).ServerHandshake(raw)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return ai.(AuthInfo).Info, conn, cmd, stdin
}

func TestCheckAliveAfterExit(t *testing.T) {
	for _, m := range []method{methodPeerPIDFD, methodPIDFDOpen} {
		t.Run(m.String(), func(t *testing.T) {
			if m == methodPeerPIDFD && creds(t, 0).method != methodPeerPIDFD {
				simtest.Skip(t, "kernel has no SO_PEERPIDFD (Linux 6.5+); the fallback row covers this kernel")
			}
			info, _, cmd, stdin := handshakeWithChild(t, m)
			if info.PID != int32(cmd.Process.Pid) || info.UID != uint32(os.Geteuid()) || info.GID != uint32(os.Getegid()) {
				t.Fatalf("info %d/%d/%d, want pid %d uid %d gid %d", info.PID, info.UID, info.GID, cmd.Process.Pid, os.Geteuid(), os.Getegid())
			}
			if err := info.CheckAlive(); err != nil {
				t.Fatalf("live child: CheckAlive = %v", err)
			}
			// Exit without being reaped: already detectable (zombie).
			stdin.Close()
			deadline := time.Now().Add(10 * time.Second)
			for info.CheckAlive() == nil {
				if time.Now().After(deadline) {
					t.Fatal("exit never detected before reaping")
				}
				time.Sleep(10 * time.Millisecond)
			}
			if err := cmd.Wait(); err != nil {
				t.Fatal(err)
			}
			if err := info.CheckAlive(); !errors.Is(err, ErrExited) {
				t.Fatalf("after exit and reap: CheckAlive = %v, want ErrExited", err)
			}
		})
	}
}

func TestCheckAliveAfterClose(t *testing.T) {
	info, conn, _, _ := handshakeWithChild(t, 0)
	fd, err := info.DupPIDFD()
	if err != nil {
		t.Fatal(err)
	}
	defer closeFD(fd)
	conn.Close()
	if err := info.CheckAlive(); !errors.Is(err, ErrClosed) {
		t.Fatalf("after close: %v, want ErrClosed", err)
	}
	if _, err := info.DupPIDFD(); !errors.Is(err, ErrClosed) {
		t.Fatalf("dup after close: %v, want ErrClosed", err)
	}
	// The duplicate outlives the connection.
	if err := CheckPIDFD(fd); err != nil {
		t.Fatalf("duplicate pidfd: %v", err)
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestNoFDLeakThroughGRPC connects many times through a real gRPC server and
// checks that every pidfd is closed with its connection.
func TestNoFDLeakThroughGRPC(t *testing.T) {
	l, path := listen(t)
	c := creds(t, 0)
	var gotInfo bool
	srv := grpc.NewServer(grpc.Creds(c), grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if i, ok := FromContext(ctx); ok && i.PID == int32(os.Getpid()) && i.CheckAlive() == nil {
			gotInfo = true
		}
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()

	call := func() {
		conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
		conn.Close()
	}
	call() // warm up gRPC's own fds
	time.Sleep(100 * time.Millisecond)
	before := countFDs(t)
	for range 30 {
		call()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		after := countFDs(t)
		if after <= before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fd count %d -> %d after 30 closed connections: pidfds leak", before, after)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !gotInfo {
		t.Fatal("FromContext did not return this process's Info inside the handler")
	}
}

func TestFromContextWithoutPeer(t *testing.T) {
	if _, ok := FromContext(context.Background()); ok {
		t.Fatal("FromContext invented an Info")
	}
}

func TestClientHandshakeRefused(t *testing.T) {
	if _, _, err := creds(t, 0).ClientHandshake(context.Background(), "", nil); err == nil {
		t.Fatal("client handshake accepted")
	}
}

// TestUcred: the kernel's record of who connected, and a clear error for a
// connection that is not a socket.
func TestUcred(t *testing.T) {
	l, path := listen(t)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	u, err := Ucred(raw)
	if err != nil {
		t.Fatal(err)
	}
	if int(u.Pid) != os.Getpid() || int(u.Uid) != os.Getuid() || int(u.Gid) != os.Getgid() {
		t.Errorf("Ucred = pid %d uid %d gid %d, want %d %d %d", u.Pid, u.Uid, u.Gid, os.Getpid(), os.Getuid(), os.Getgid())
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := Ucred(a); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Ucred(net.Pipe) = %v, want a not-a-socket error", err)
	}
}
