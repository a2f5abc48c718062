package healthz

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
)

func TestLiveAndReady(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	hc := hclconf.HealthChecks{ListenerEnabled: true, BindAddress: "127.0.0.1", BindPort: port, LivePath: "/live", ReadyPath: "/ready"}
	var notReady error = errors.New("token removed")
	srv := New(hc, func(context.Context) error { return notReady })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, srv, slog.New(slog.NewTextHandler(io.Discard, nil)), "health checks") }()
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	get := func(path string) int {
		for range 50 {
			resp, err := http.Get(base + path)
			if err == nil {
				resp.Body.Close()
				return resp.StatusCode
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("GET %s never answered", path)
		return 0
	}
	if c := get("/live"); c != http.StatusOK {
		t.Fatalf("live = %d", c)
	}
	if c := get("/ready"); c != http.StatusServiceUnavailable {
		t.Fatalf("ready while not ready = %d", c)
	}
	notReady = nil
	if c := get("/ready"); c != http.StatusOK {
		t.Fatalf("ready = %d", c)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
}
