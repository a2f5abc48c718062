package manager

import (
	"context"
	"crypto/x509"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/keymanager/disk"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor/jointoken"
)

// bootstrapCalls records what a BootstrapFunc was asked and answers with
// the certificates of the current CA.
type bootstrapCalls struct {
	mu    sync.Mutex
	ca    *testCA
	calls []bool // the rebootstrap argument of each call
}

func (b *bootstrapCalls) fetch(_ context.Context, rebootstrap bool) ([]*x509.Certificate, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, rebootstrap)
	return []*x509.Certificate{b.ca.cert}, nil
}

func (b *bootstrapCalls) seen() []bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]bool(nil), b.calls...)
}

func (b *bootstrapCalls) setCA(ca *testCA) {
	b.mu.Lock()
	b.ca = ca
	b.mu.Unlock()
}

func bootstrapManager(t *testing.T, a agentSetup, mutate func(*Config)) *Manager {
	t.Helper()
	km, err := disk.New(filepath.Join(a.dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		TrustDomain: testTD, ServerAddress: a.addr, DataDir: a.dir,
		NodeAttestor: jointoken.New(a.token), KeyManager: km, SyncInterval: 50 * time.Millisecond,
	}
	mutate(&cfg)
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// TestBootstrapBundleOnlyWhenNeeded: the bootstrap bundle (trust_bundle_url)
// is asked for on first contact, and not by an agent that stored its
// bundle, which starts without it.
func TestBootstrapBundleOnlyWhenNeeded(t *testing.T) {
	ca := newTestCA(t)
	srv := &fakeServer{ca: ca, agentTTL: time.Hour, svidTTL: time.Hour, token: "t"}
	addr, _ := srv.serve(t, "127.0.0.1:0")
	a := agentSetup{dir: t.TempDir(), addr: addr, token: "t", ca: ca}
	src := &bootstrapCalls{ca: ca}
	m := bootstrapManager(t, a, func(c *Config) { c.BootstrapBundle = src.fetch })
	stop := run(t, m)
	waitFor(t, "attestation", func() bool { return m.AgentSVID() != nil })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := src.seen(); len(got) != 1 || got[0] {
		t.Fatalf("bootstrap calls %v, want one first bootstrap", got)
	}
	m.Close()

	src2 := &bootstrapCalls{ca: ca}
	m2 := bootstrapManager(t, a, func(c *Config) { c.BootstrapBundle = src2.fetch })
	stop2 := run(t, m2)
	time.Sleep(200 * time.Millisecond) // a few syncs
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	if got := src2.seen(); len(got) != 0 {
		t.Fatalf("restarted agent with a stored bundle fetched the bootstrap bundle: %v", got)
	}
}

// TestBootstrapOnce: with retry_bootstrap = false, an unreachable server
// at first contact ends Run; with retries, Run goes on until stopped.
func TestBootstrapOnce(t *testing.T) {
	ca := newTestCA(t)
	srv := &fakeServer{ca: ca, agentTTL: time.Hour, svidTTL: time.Hour, token: "t"}
	addr, stopSrv := srv.serve(t, "127.0.0.1:0")
	stopSrv()
	a := agentSetup{dir: t.TempDir(), addr: addr, token: "t", ca: ca}
	m := bootstrapManager(t, a, func(c *Config) {
		c.TrustBundle = []*x509.Certificate{ca.cert}
		c.BootstrapOnce = true
	})
	done := make(chan error, 1)
	go func() { done <- m.Run(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "retry_bootstrap is false") {
			t.Fatalf("Run = %v, want the bootstrap failure", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not give up with BootstrapOnce")
	}

	m2 := bootstrapManager(t, agentSetup{dir: t.TempDir(), addr: addr, token: "t", ca: ca}, func(c *Config) {
		c.TrustBundle = []*x509.Certificate{ca.cert}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- m2.Run(ctx) }()
	select {
	case err := <-done2:
		t.Fatalf("Run with retries returned %v before it was stopped", err)
	case <-time.After(500 * time.Millisecond):
	}
	cancel()
	if err := <-done2; err != nil {
		t.Fatalf("Run = %v after cancel, want nil", err)
	}
}

// TestRebootstrap: the server's CA is replaced with no overlap, so the
// agent's bundle no longer verifies it. In "always" mode, once the delay
// has passed, the agent fetches the bootstrap bundle again and attests
// to the new CA; in "never" mode it keeps its old identity.
func TestRebootstrap(t *testing.T) {
	for _, mode := range []string{RebootstrapAlways, RebootstrapNever} {
		t.Run(mode, func(t *testing.T) {
			ca1 := newTestCA(t)
			srv := &fakeServer{ca: ca1, agentTTL: time.Hour, svidTTL: time.Hour, token: "t", reattestable: true}
			addr, stopSrv := srv.serve(t, "127.0.0.1:0")
			a := agentSetup{dir: t.TempDir(), addr: addr, token: "t", ca: ca1}
			src := &bootstrapCalls{ca: ca1}
			m := bootstrapManager(t, a, func(c *Config) {
				c.BootstrapBundle = src.fetch
				c.RebootstrapMode = mode
				c.RebootstrapDelay = 300 * time.Millisecond
			})
			stop := run(t, m)
			waitFor(t, "attestation", func() bool { return m.AgentSVID() != nil })
			first := m.AgentSVID().Certificates[0]

			stopSrv()
			ca2 := newTestCA(t)
			src.setCA(ca2)
			srv2 := &fakeServer{ca: ca2, agentTTL: time.Hour, svidTTL: time.Hour, token: "t", reattestable: true}
			srv2.serve(t, addr)

			if mode == RebootstrapNever {
				time.Sleep(time.Second)
				if got := m.AgentSVID().Certificates[0]; !got.Equal(first) {
					t.Fatal("agent changed identity with rebootstrap_mode never")
				}
				if calls := src.seen(); len(calls) != 1 {
					t.Fatalf("bootstrap calls %v, want only the first", calls)
				}
				if err := stop(); err != nil {
					t.Fatal(err)
				}
				return
			}
			waitFor(t, "an agent SVID from the new CA", func() bool {
				svid := m.AgentSVID()
				return svid != nil && svid.Certificates[0].CheckSignatureFrom(ca2.cert) == nil
			})
			if calls := src.seen(); len(calls) != 2 || calls[0] || !calls[1] {
				t.Fatalf("bootstrap calls %v, want a bootstrap then a rebootstrap", calls)
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRebootstrapUnsupported: a join token cannot be used again, so
// "always" stops the agent and "auto" turns rebootstrapping off.
func TestRebootstrapUnsupported(t *testing.T) {
	for _, mode := range []string{RebootstrapAlways, RebootstrapAuto} {
		t.Run(mode, func(t *testing.T) {
			ca := newTestCA(t)
			srv := &fakeServer{ca: ca, agentTTL: time.Hour, svidTTL: time.Hour, token: "t"}
			addr, _ := srv.serve(t, "127.0.0.1:0")
			m := bootstrapManager(t, agentSetup{dir: t.TempDir(), addr: addr, token: "t", ca: ca}, func(c *Config) {
				c.TrustBundle = []*x509.Certificate{ca.cert}
				c.RebootstrapMode = mode
			})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- m.Run(ctx) }()
			if mode == RebootstrapAlways {
				select {
				case err := <-done:
					if !errors.Is(err, ErrRebootstrapUnsupported) {
						t.Fatalf("Run = %v, want ErrRebootstrapUnsupported", err)
					}
				case <-time.After(30 * time.Second):
					t.Fatal("Run went on with rebootstrap always and a join token")
				}
				return
			}
			waitFor(t, "attestation", func() bool { return m.AgentSVID() != nil })
			time.Sleep(200 * time.Millisecond)
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("auto: Run = %v, want nil", err)
			}
		})
	}
}

// TestReady: not ready before attestation; ready while the SVID is valid
// and the outage is shorter than what the SVID has left; not ready once
// the outage outlasts it, or the SVID expires.
func TestReady(t *testing.T) {
	var offset atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	ca := newTestCA(t)
	srv := &fakeServer{ca: ca, agentTTL: time.Hour, svidTTL: time.Hour, token: "t"}
	addr, stopSrv := srv.serve(t, "127.0.0.1:0")
	m := bootstrapManager(t, agentSetup{dir: t.TempDir(), addr: addr, token: "t", ca: ca}, func(c *Config) {
		c.TrustBundle = []*x509.Certificate{ca.cert}
		c.Clock = clock
	})
	if err := m.Ready(); err == nil || !strings.Contains(err.Error(), "not attested") {
		t.Fatalf("Ready before attestation = %v", err)
	}
	stop := run(t, m)
	waitFor(t, "ready", func() bool { return m.Ready() == nil })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	stopSrv()

	// The SVID lives an hour; nothing reaches the server from here on.
	offset.Store(int64(25 * time.Minute))
	if err := m.Ready(); err != nil {
		t.Fatalf("25 minutes out, 35 left: %v", err)
	}
	offset.Store(int64(32 * time.Minute))
	if err := m.Ready(); err == nil || !strings.Contains(err.Error(), "server unreachable for") {
		t.Fatalf("32 minutes out, 28 left: %v", err)
	}
	offset.Store(int64(61 * time.Minute))
	if err := m.Ready(); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("after expiry: %v", err)
	}
}
