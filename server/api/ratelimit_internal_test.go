package api

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// TestPerIPLimiterBounded: however many source addresses call, the
// limiters held stay within two generations of maxIPs, an address
// in use keeps its limiter (and so its spent budget) across generations,
// and an address unused for a GC interval is forgotten.
func TestPerIPLimiterBounded(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	l := newPerIPLimiter(AttestLimitPerIP, clock)
	const maxIPs = 4096
	l.maxIPs = maxIPs
	busy := l.get("192.0.2.1")
	for i := range 3 * maxIPs {
		l.get(fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&0xff, i&0xff))
		if i%100 == 0 && l.get("192.0.2.1") != busy {
			t.Fatalf("the busy address lost its limiter after %d others", i)
		}
	}
	if n := l.size(); n > 2*maxIPs {
		t.Fatalf("%d limiters held, want at most %d", n, 2*maxIPs)
	}

	idle := l.get("192.0.2.2")
	if l.get("192.0.2.1") != busy {
		t.Fatal("the busy address lost its limiter")
	}
	advance(limiterGCInterval)
	l.get("192.0.2.3") // a new address after the interval retires the generation
	if l.get("192.0.2.1") != busy {
		t.Fatal("an address used within the last interval lost its limiter")
	}
	advance(limiterGCInterval)
	l.get("192.0.2.4")
	if l.get("192.0.2.2") == idle {
		t.Error("an address unused for a whole interval kept its limiter")
	}
	if n := l.size(); n > 8 {
		t.Errorf("%d limiters held after the flood's addresses went idle, want a handful", n)
	}
}

// TestRateLimitExemptsLocalCallers: the admin socket is never limited, a
// TCP caller is, and per address.
func TestRateLimitExemptsLocalCallers(t *testing.T) {
	a := New(Config{RateLimit: RateLimits{Attestation: true, Signing: true}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	call := func(addr net.Addr) error {
		ctx, cancel := context.WithTimeout(peer.NewContext(context.Background(), &peer.Peer{Addr: addr}), 50*time.Millisecond)
		defer cancel()
		return a.rateLimit(ctx, methodAttestAgent, nil)
	}
	local := &net.UnixAddr{Name: "/tmp/api.sock", Net: "unix"}
	for i := range 20 {
		if err := call(local); err != nil {
			t.Fatalf("local call %d: %v", i, err)
		}
	}
	remote := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1000}
	if err := call(remote); err != nil {
		t.Fatalf("first remote call: %v", err)
	}
	err := call(&net.TCPAddr{IP: remote.IP, Port: 1001}) // another port is the same source
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("second remote call: %v, want ResourceExhausted", err)
	}
	if err := call(&net.TCPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 1000}); err != nil {
		t.Fatalf("another source: %v", err)
	}
	// Unlimited methods are never charged.
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: remote})
	for range 5 {
		if err := a.rateLimit(ctx, "/spire.api.server.entry.v1.Entry/ListEntries", nil); err != nil {
			t.Fatal(err)
		}
	}
}
