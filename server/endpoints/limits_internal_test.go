package endpoints

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMaxConnectionsFor(t *testing.T) {
	for _, tc := range []struct {
		nofile int64
		want   int
	}{
		{1024, 1024 - 256}, // the minimum reserve
		{20000, 18000},     // a tenth kept back
		{1 << 20, 943719},  // the reserve rounds down
		{200, 16},          // too small to keep the reserve: a floor
	} {
		if got := maxConnectionsFor(tc.nofile); got != tc.want {
			t.Errorf("RLIMIT_NOFILE %d: got %d, want %d", tc.nofile, got, tc.want)
		}
	}
	if got := DefaultMaxConnections(); got < 16 {
		t.Errorf("DefaultMaxConnections() = %d", got)
	}
}

func TestSourceIP(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"127.0.0.2:4000", "127.0.0.2"},
		{"[::ffff:10.1.2.3]:4000", "10.1.2.3"}, // IPv4-mapped: the IPv4 address
		{"[2001:db8:1:2:aaaa::1]:4000", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:bbbb::7]:5000", "2001:db8:1:2::/64"}, // same /64, same key
		{"[2001:db8:1:3::1]:4000", "2001:db8:1:3::/64"},
	} {
		a, err := net.ResolveTCPAddr("tcp", tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := sourceIP(a); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.addr, got, tc.want)
		}
	}
}

// acceptOne returns a connection accepted by a limiter's listener over
// real loopback TCP, and the client's end.
func acceptOne(t *testing.T, lim *limiter) (*conn, net.Conn) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &listener{Listener: inner, lim: lim}
	t.Cleanup(func() { l.Close() })
	client, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*conn), client
}

// TestIdleCloseNeverCutsACall drives the two interleavings of the idle
// timer and a call's start that used to cut the call: a timer run that was
// already under way when a call began and ended (rpcBegin's Stop is too
// late for it), and a call that begins after the timer decided to close.
func TestIdleCloseNeverCutsACall(t *testing.T) {
	lim := newLimiter(Limits{IdleTimeout: time.Hour}, spiffeid.RequireTrustDomainFromString("example.org"), nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	c, client := acceptOne(t, lim)
	if err := c.handshakeDone(spiffeid.ID{}); err != nil {
		t.Fatal(err)
	}

	// A stale run: the connection was idle for less than the timeout.
	c.rpcBegin()
	c.rpcEnd()
	c.idleExpired()
	client.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := client.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a stale idle timer run closed a connection whose call had just ended: read %v", err)
	}

	// The timer decides with no call in flight; a call that begins after
	// that is refused before its handler runs.
	c.mu.Lock()
	c.idleSince = time.Now().Add(-2 * time.Hour)
	c.mu.Unlock()
	c.idleExpired()
	c.rpcBegin()
	defer c.rpcEnd()
	ctx := context.WithValue(context.Background(), connContextKey{}, c)
	ran := false
	_, err := rpcTracker{lim}.unary(ctx, nil, &grpc.UnaryServerInfo{}, func(context.Context, any) (any, error) {
		ran = true
		return nil, nil
	})
	if ran || status.Code(err) != codes.Unavailable {
		t.Fatalf("a call on a connection the idle timer closes: handler ran %v, error %v; want no run and Unavailable", ran, err)
	}
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, client); err != nil {
		t.Fatalf("the idle connection was not closed: %v", err)
	}
	if got := lim.idle.Load(); got != 1 {
		t.Fatalf("idle closes counted: %d, want 1", got)
	}
}
