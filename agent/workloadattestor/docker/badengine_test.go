package docker

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/sim/dockerd"
)

// hangingEngine listens on a unix socket, accepts every connection and
// never answers.
func hangingEngine(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hang.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "unix://" + path
}

// garbageEngine is an HTTP server on a unix socket that answers every
// request with body.
func garbageEngine(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "garbage.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return "unix://" + path
}

// A process in a real container, attested against an engine that hangs:
// the call fails with a clear error once the inspect bound has passed,
// and at once when the caller gives up first.
func TestHangingEngine(t *testing.T) {
	d := dockerd.Start(t)
	c, _ := sleeper(t, d, nil)
	const bound = 300 * time.Millisecond
	a := newAttestor(t, Config{SocketPath: hangingEngine(t), InspectTimeout: bound})
	fd := pidfd(t, c.PID)

	start := time.Now()
	_, err := a.Attest(context.Background(), int32(c.PID), fd)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "did not answer within "+bound.String()) || !strings.Contains(err.Error(), c.ID) {
		t.Fatalf("Attest against a hanging engine: %v", err)
	}
	if took > bound+2*time.Second {
		t.Fatalf("took %v, bound %v", took, bound)
	}
	t.Logf("hanging engine: %v", err)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	b := newAttestor(t, Config{SocketPath: hangingEngine(t), InspectTimeout: time.Minute})
	start = time.Now()
	_, err = b.Attest(ctx, int32(c.PID), fd)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("Attest with a 20ms context against a hanging engine: %v after %v", err, time.Since(start))
	}
}

// An engine that answers garbage: a clear error within SPIRE's retries,
// never selectors and never a panic.
func TestGarbageEngine(t *testing.T) {
	d := dockerd.Start(t)
	c, _ := sleeper(t, d, nil)
	fd := pidfd(t, c.PID)
	for _, tc := range []struct {
		name, body, want string
	}{
		{"not JSON", "{not json", "not a container's inspect JSON: invalid character"},
		{"truncated", `{"Id":"x","Config":{"Labels":{"a"`, "not a container's inspect JSON: unexpected EOF"},
		{"wrong types", `{"Config":{"Labels":["a","b"]}}`, "not a container's inspect JSON: json: cannot unmarshal"},
		{"no Config", `{"Id":"x","State":{"Running":true}}`, "not a container's inspect JSON: no Config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAttestor(t, Config{SocketPath: garbageEngine(t, tc.body), InspectTimeout: 3 * time.Second})
			start := time.Now()
			sel, err := a.Attest(context.Background(), int32(c.PID), fd)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "inspect container "+c.ID) {
				t.Fatalf("Attest = %q, %v; want an error containing %q", strs(sel), err, tc.want)
			}
			t.Logf("%s: %v", tc.name, err)
			if took := time.Since(start); took > 3*time.Second {
				t.Fatalf("took %v", took)
			}
			if a.cache.has(c.ID) {
				t.Fatal("a garbage answer was cached")
			}
		})
	}
}

// endlessEngine answers pings as an engine does, and every other request
// with a JSON string that never ends.
func endlessEngine(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "endless.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	chunk := []byte(strings.Repeat("a", 64<<10))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/_ping") {
			w.Header().Set("Api-Version", "1.41")
			_, _ = w.Write([]byte("OK"))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if _, err := w.Write([]byte(`{"Id":"`)); err != nil {
			return
		}
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return "unix://" + path
}

// An engine that answers without end: the call fails once the answer
// passes the cap, well before the inspect bound, rather than the agent
// reading it into memory until the bound or the OOM killer ends it.
func TestEndlessEngine(t *testing.T) {
	d := dockerd.Start(t)
	c, _ := sleeper(t, d, nil)
	a := newAttestor(t, Config{SocketPath: endlessEngine(t), InspectTimeout: 20 * time.Second})
	start := time.Now()
	sel, err := a.Attest(context.Background(), int32(c.PID), pidfd(t, c.PID))
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("Attest against an endless engine: %q, %v; want the size cap's error", strs(sel), err)
	}
	t.Logf("after %v: %v", time.Since(start), err)
}
