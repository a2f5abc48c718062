package workloadapitest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// HTTP2Hello is a client's HTTP/2 connection preface and an empty SETTINGS
// frame: after it, the server holds an established gRPC connection that
// carries no RPC, which is what an idle client looks like.
var HTTP2Hello = append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)

// Flood opens n connections to the Unix socket sock, writes hello on each
// (nil: nothing, a caller that never finishes its handshake), and then
// tells which ones the server refused: a refused connection ends at once
// (EOF or reset), a kept one answers or stays silent until probe passes.
// The caller holds the returned connections and closes them; a dial error
// closes those already open.
func Flood(sock string, n int, hello []byte, probe time.Duration) (conns []net.Conn, refused int, err error) {
	conns = make([]net.Conn, 0, n)
	for range n {
		c, err := dialBacklogged(sock)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, 0, fmt.Errorf("dial %d: %w", len(conns), err)
		}
		conns = append(conns, c)
		if hello != nil {
			// A refused connection may already be closed; it is counted below.
			_, _ = c.Write(hello)
		}
	}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(probe))
			_, err := c.Read(make([]byte, 64))
			var ne net.Error
			if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
				mu.Lock()
				refused++
				mu.Unlock()
			}
			c.SetReadDeadline(time.Time{})
		}()
	}
	wg.Wait()
	return conns, refused, nil
}

// dialBacklogged dials sock, waiting while the listen backlog is full
// (EAGAIN on a Unix socket) for the server's accept loop to catch up.
func dialBacklogged(sock string) (net.Conn, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil || !errors.Is(err, syscall.EAGAIN) || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(time.Millisecond)
	}
}

// CopyForOthers copies the running test binary into dir, mode 0755, so
// that a test can run it as another uid (go test's work directory is 0700).
func CopyForOthers(t testing.TB, dir string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst := filepath.Join(dir, filepath.Base(exe))
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, src); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}
