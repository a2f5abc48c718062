package oidcprovider

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/internal/grpctest"
	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
)

// bundleServer answers GetBundle with whatever bundle it holds.
type bundleServer struct {
	bundlev1.UnimplementedBundleServer
	mu     sync.Mutex
	bundle *types.Bundle
	err    error
	mask   *types.BundleMask
}

func (s *bundleServer) GetBundle(_ context.Context, req *bundlev1.GetBundleRequest) (*types.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mask = req.GetOutputMask()
	return s.bundle, s.err
}

func (s *bundleServer) set(b *types.Bundle, err error) {
	s.mu.Lock()
	s.bundle, s.err = b, err
	s.mu.Unlock()
}

func pkixKey(t *testing.T) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestServerAPISource polls a gRPC bundle service over a real socket: a
// malformed authority is skipped with a warning, an unchanged bundle keeps
// its modification time, and a failed poll keeps the last set.
func TestServerAPISource(t *testing.T) {
	srv := &bundleServer{}
	conn := grpctest.Serve(t, func(s *grpc.Server) { bundlev1.RegisterBundleServer(s, srv) })
	var logs syncbuf.Buffer
	log := newTestLogger(&logs)
	p := newPoller(log, time.Hour, "Failed to fetch bundle", serverAPIFetch(log, conn))
	clock := time.Unix(1000, 0)
	p.now = func() time.Time { return clock }
	ctx := context.Background()

	good := pkixKey(t)
	srv.set(&types.Bundle{TrustDomain: "example.org", JwtAuthorities: []*types.JWTKey{
		{KeyId: "b", PublicKey: good},
		{KeyId: "bad", PublicKey: []byte("not a key")},
		{KeyId: "a", PublicKey: pkixKey(t)},
	}}, nil)
	p.pollOnce(ctx)
	keys, mod, ok := p.KeySet()
	if !ok || len(keys) != 2 || keys[0].KeyID != "a" || keys[1].KeyID != "b" {
		t.Fatalf("keys %v ok %v, want a and b", keys, ok)
	}
	if !srv.mask.GetJwtAuthorities() || srv.mask.GetX509Authorities() {
		t.Errorf("output mask %v, want JWT authorities only", srv.mask)
	}
	if !strings.Contains(logs.String(), "Malformed public key in bundle") || !strings.Contains(logs.String(), "kid=bad") {
		t.Errorf("no warning for the malformed key:\n%s", logs.String())
	}

	clock = clock.Add(time.Minute)
	p.pollOnce(ctx)
	if _, mod2, _ := p.KeySet(); !mod2.Equal(mod) {
		t.Errorf("unchanged bundle moved the modification time to %v", mod2)
	}
	if !p.LastSuccessfulPoll().Equal(clock) {
		t.Errorf("last poll %v, want %v", p.LastSuccessfulPoll(), clock)
	}

	lastGood := clock
	clock = clock.Add(time.Minute)
	srv.set(nil, status.Error(codes.Unavailable, "down"))
	p.pollOnce(ctx)
	if keys, _, ok := p.KeySet(); !ok || len(keys) != 2 {
		t.Errorf("a failed poll dropped the keys: %v", keys)
	}
	if !p.LastSuccessfulPoll().Equal(lastGood) {
		t.Errorf("a failed poll counted as successful")
	}
	if !strings.Contains(logs.String(), "Failed to fetch bundle") {
		t.Errorf("no warning for the failed poll:\n%s", logs.String())
	}

	srv.set(&types.Bundle{TrustDomain: "example.org", JwtAuthorities: []*types.JWTKey{{KeyId: "c", PublicKey: good}}}, nil)
	p.pollOnce(ctx)
	if keys, mod3, _ := p.KeySet(); len(keys) != 1 || keys[0].KeyID != "c" || !mod3.Equal(clock) {
		t.Errorf("after rotation: %v at %v", keys, mod3)
	}
	// An empty set is a set: served as {"keys": []}, not "not available".
	srv.set(&types.Bundle{TrustDomain: "example.org"}, nil)
	p.pollOnce(ctx)
	if keys, _, ok := p.KeySet(); !ok || len(keys) != 0 {
		t.Errorf("empty bundle: %v %v", keys, ok)
	}
}

// TestPollerStopsOnClose: Close returns once the loop has, even while a
// fetch is blocked.
func TestPollerStopsOnClose(t *testing.T) {
	started := make(chan struct{})
	p := newPoller(discard(), time.Millisecond, "x", func(ctx context.Context) ([]jose.JSONWebKey, error) {
		select {
		case started <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return nil, errors.New("stopped")
	})
	p.start()
	<-started
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
}
