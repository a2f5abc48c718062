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

	"golang.org/x/time/rate"
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

// TestWaitNBound: a call waits for its turn only if the turn comes within
// both its deadline and maxLimitWait; otherwise it is refused at once
// (without waiting out either) with the rate package's message, which is
// SPIRE's, whether the caller set no deadline, a distant one or a short
// one.
func TestWaitNBound(t *testing.T) {
	// One unit every 20 s: once the burst of one is spent, the next turn
	// is beyond maxLimitWait.
	slow := func() *rate.Limiter {
		lim := rate.NewLimiter(rate.Every(2*maxLimitWait), 1)
		lim.Allow()
		return lim
	}
	hour, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	short, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
	}{
		{"no deadline", context.Background()},
		{"deadline past the bound", hour},
		{"deadline before the turn", short},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := waitN(tc.ctx, slow(), 1)
			// Waiting out the bound would take 10 s (and the short
			// deadline would end in DeadlineExceeded instead).
			if elapsed := time.Since(start); elapsed >= maxLimitWait/2 {
				t.Errorf("refused after %v, want at once", elapsed)
			}
			st := status.Convert(err)
			if st.Code() != codes.ResourceExhausted || st.Message() != "rate: Wait(n=1) would exceed context deadline" {
				t.Errorf("waitN = %v, want ResourceExhausted with the rate package's message", err)
			}
		})
	}
	t.Run("turn within both", func(t *testing.T) {
		lim := rate.NewLimiter(rate.Every(50*time.Millisecond), 1)
		lim.Allow()
		if err := waitN(hour, lim, 1); err != nil {
			t.Errorf("waitN with a turn 50 ms away: %v", err)
		}
	})
}
