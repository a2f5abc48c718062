package ca_test

import (
	"context"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/ca"
	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/keymanager"
	"github.com/spiffe-hw/spire-hw/server/keymanager/memory"
)

// server is one of several CAs sharing a store, each with its own keys.
type server struct {
	km keymanager.KeyManager
	m  *ca.Manager
}

func (e *env) server(t *testing.T, km keymanager.KeyManager) *server {
	t.Helper()
	cfg := e.config()
	cfg.KeyManager = km
	return &server{km: km, m: mustNew(t, cfg)}
}

// TestServersSharingAStoreRestart: each server sharing the datastore keeps
// its own journal, found again by its own keys, so that every one of them
// restarts on its CA (with one shared journal, the last writer's keys did
// not match the others' and their restart failed).
func TestServersSharingAStoreRestart(t *testing.T) {
	ctx := context.Background()
	e := newEnv()
	var servers []*server
	for range 3 {
		servers = append(servers, e.server(t, memory.New()))
	}
	if len(e.store.journals) != 3 {
		t.Fatalf("%d journals for 3 servers", len(e.store.journals))
	}
	if b := e.store.bundle(t, td); len(b.X509Authorities) != 3 || len(b.JwtAuthorities) != 3 {
		t.Fatalf("bundle has %d X.509 and %d JWT authorities, want each server's", len(b.X509Authorities), len(b.JwtAuthorities))
	}
	// Each prepares its next CA, so that restarts reload both states.
	e.clock.Set(e.clock.Now().Add(3 * time.Hour))
	for _, s := range servers {
		if err := s.m.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range servers {
		again := e.server(t, s.km)
		if !again.m.ActiveX509CA().Equal(s.m.ActiveX509CA()) || again.m.JWTKeyID() != s.m.JWTKeyID() {
			t.Fatalf("server %d restarted on another CA", i)
		}
		if len(again.m.X509Authorities()) != 2 {
			t.Fatalf("server %d lost its prepared CA", i)
		}
	}
	if len(e.store.journals) != 3 {
		t.Fatalf("%d journals after the restarts, want 3", len(e.store.journals))
	}
}

// TestLegacyJournalClaimed: the single journal of an older release is its
// server's, which goes on with it and records its authority at the next
// write; another server sharing the store leaves it alone.
func TestLegacyJournalClaimed(t *testing.T) {
	ctx := context.Background()
	e := newEnv()
	owner := e.server(t, memory.New())
	for name, j := range e.store.journals {
		delete(e.store.journals, name)
		e.store.journals["ca"] = &datastore.CAJournal{Name: "ca", Data: j.Data}
	}
	other := e.server(t, memory.New())
	if other.m.ActiveX509CA().Equal(owner.m.ActiveX509CA()) {
		t.Fatal("another server took the older release's CA")
	}
	if j := e.store.journals["ca"]; j.ActiveX509AuthorityID != "" {
		t.Fatal("another server claimed the older release's journal")
	}
	again := e.server(t, owner.km)
	if !again.m.ActiveX509CA().Equal(owner.m.ActiveX509CA()) {
		t.Fatal("the owner did not go on with its journal of an older release")
	}
	e.clock.Set(e.clock.Now().Add(3 * time.Hour))
	if err := again.m.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if j := e.store.journals["ca"]; j.ActiveX509AuthorityID == "" || j.ExpiresAt == 0 {
		t.Fatalf("journal not claimed at the next write: %+v", j)
	}
	if len(e.store.journals) != 2 {
		t.Fatalf("%d journals, want 2", len(e.store.journals))
	}
}

// TestGoneServerPruned: a server that is gone for good stays in the bundle
// until its authorities (X.509 CA and JWT key) expire; then the others drop
// each from the bundle, and its journal from the store, and keep their own.
func TestGoneServerPruned(t *testing.T) {
	ctx := context.Background()
	e := newEnv()
	live := e.server(t, memory.New())
	gone := e.server(t, memory.New())
	goneCA := gone.m.ActiveX509CA()
	goneJWT, _ := gone.m.JWTSlots()
	t0 := e.clock.Now()
	inBundle := func() bool {
		for _, a := range e.store.bundle(t, td).X509Authorities {
			if string(a.Asn1) == string(goneCA.Raw) {
				return true
			}
		}
		return false
	}
	jwtInBundle := func() bool {
		for _, k := range e.store.bundle(t, td).JwtAuthorities {
			if k.KeyId == goneJWT.AuthorityID {
				return true
			}
		}
		return false
	}
	if goneJWT.AuthorityID == "" || !jwtInBundle() {
		t.Fatalf("the gone server's JWT key %q is not in the bundle to begin with", goneJWT.AuthorityID)
	}
	// CA TTL 6h: step past the gone server's expiry while the live one
	// rotates on.
	for d := time.Hour; d <= 8*time.Hour; d += time.Hour {
		e.clock.Set(t0.Add(d))
		if err := live.m.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		expired := e.clock.Now().After(goneCA.NotAfter)
		if inBundle() == expired {
			t.Fatalf("at +%s (gone CA expired: %v) the bundle holds it: %v", d, expired, inBundle())
		}
		if jwtExpired := e.clock.Now().After(goneJWT.NotAfter); jwtInBundle() == jwtExpired {
			t.Fatalf("at +%s (gone JWT key expired: %v) the bundle holds it: %v", d, jwtExpired, jwtInBundle())
		}
		if got := len(e.store.journals); got != map[bool]int{false: 2, true: 1}[expired] {
			t.Fatalf("at +%s (gone CA expired: %v): %d journals", d, expired, got)
		}
	}
	again := e.server(t, live.km)
	if !again.m.ActiveX509CA().Equal(live.m.ActiveX509CA()) {
		t.Fatal("the live server lost its journal to pruning")
	}
}
