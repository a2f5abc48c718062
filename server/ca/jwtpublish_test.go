package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/internal/testclock"
	"github.com/spiffe-hw/spire-hw/server/ca"
	"github.com/spiffe-hw/spire-hw/server/ca/upstream"
)

// publishingUpstream is a disk upstream that also publishes JWT keys: it
// answers with the upstream's own JWT key followed by the one published,
// as a nested SPIRE upstream answers with its bundle's keys.
type publishingUpstream struct {
	upstream.Authority
	own *types.JWTKey
	err error

	mu        sync.Mutex
	published []string
}

func (p *publishingUpstream) PublishJWTKey(_ context.Context, k *types.JWTKey) ([]*types.JWTKey, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.published = append(p.published, k.KeyId)
	if p.err != nil {
		return nil, p.err
	}
	return []*types.JWTKey{p.own, k}, nil
}

func (p *publishingUpstream) kids() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.published...)
}

func newPublishingUpstream(t *testing.T, err error) *publishingUpstream {
	t.Helper()
	dir := t.TempDir()
	root, rootKey := testCA(t, "root", nil, nil, 48*time.Hour)
	keyDER, err2 := x509.MarshalPKCS8PrivateKey(rootKey)
	if err2 != nil {
		t.Fatal(err2)
	}
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	writePEM(t, certPath, "CERTIFICATE", root.Raw)
	writePEM(t, keyPath, "PRIVATE KEY", keyDER)
	disk, err2 := upstream.NewDisk(certPath, keyPath, "")
	if err2 != nil {
		t.Fatal(err2)
	}
	k, err2 := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err2 != nil {
		t.Fatal(err2)
	}
	pub, err2 := x509.MarshalPKIXPublicKey(k.Public())
	if err2 != nil {
		t.Fatal(err2)
	}
	own := &types.JWTKey{KeyId: "upstream-key", PublicKey: pub, ExpiresAt: time.Now().Add(48 * time.Hour).Unix()}
	return &publishingUpstream{Authority: disk, own: own, err: err}
}

func jwtKids(b *types.Bundle) map[string]bool {
	out := map[string]bool{}
	for _, k := range b.GetJwtAuthorities() {
		out[k.KeyId] = true
	}
	return out
}

func TestJWTKeyPublishedUpstream(t *testing.T) {
	up := newPublishingUpstream(t, nil)
	e := newEnv()
	e.clock = testclock.New(time.Now()) // the upstream signs with the wall clock
	cfg := e.config()
	cfg.Upstream = up
	m := mustNew(t, cfg)

	kid := m.JWTKeyID()
	if got := up.kids(); len(got) != 1 || got[0] != kid {
		t.Fatalf("published upstream %v, want the active key %q", got, kid)
	}
	if kids := jwtKids(e.store.bundle(t, td)); len(kids) != 2 || !kids[kid] || !kids["upstream-key"] {
		t.Fatalf("bundle JWT keys = %v, want the upstream's answer (its key and ours)", kids)
	}

	// A restart loads the journal: the key is already published upstream
	// and is not sent again, so start-up does not depend on the upstream.
	mustNew(t, cfg)
	if got := up.kids(); len(got) != 1 {
		t.Fatalf("restart published upstream again: %v", got)
	}

	// At half-life the successor is prepared and published upstream too.
	e.clock.Set(e.clock.Now().Add(cfg.CATTL/2 + time.Second))
	if err := m.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := up.kids()
	if len(got) != 2 || got[1] == kid {
		t.Fatalf("published upstream %v, want the prepared key after %q", got, kid)
	}
	if !jwtKids(e.store.bundle(t, td))[got[1]] {
		t.Fatal("prepared key missing from the bundle")
	}
}

func TestJWTKeyUpstreamUnsupportedPublishesLocally(t *testing.T) {
	up := newPublishingUpstream(t, fmt.Errorf("upstreamauthority(x): %w", errors.ErrUnsupported))
	e := newEnv()
	e.clock = testclock.New(time.Now())
	cfg := e.config()
	cfg.Upstream = up
	m := mustNew(t, cfg)
	if kids := jwtKids(e.store.bundle(t, td)); len(kids) != 1 || !kids[m.JWTKeyID()] {
		t.Fatalf("bundle JWT keys = %v, want only the local key", kids)
	}
	if len(up.kids()) != 1 {
		t.Fatal("the upstream was not asked")
	}
}

func TestJWTKeyUpstreamFailureFailsPreparation(t *testing.T) {
	up := newPublishingUpstream(t, errors.New("upstream unreachable"))
	e := newEnv()
	e.clock = testclock.New(time.Now())
	cfg := e.config()
	cfg.Upstream = up
	_, err := ca.New(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "upstream unreachable") {
		t.Fatalf("ca.New = %v, want the upstream's failure", err)
	}
	if b, err := e.store.FetchBundle(context.Background(), td.Name()); err == nil && len(b.GetJwtAuthorities()) != 0 {
		t.Fatal("a key the upstream refused was published locally")
	}
}
