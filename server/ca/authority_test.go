package ca_test

import (
	"context"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-hw/spire-hw/server/ca"
)

// TestForcedX509Rotation walks an X.509 CA through what an operator does
// with localauthority/v1: prepare, activate, taint the old one, revoke it.
func TestForcedX509Rotation(t *testing.T) {
	ctx := context.Background()
	e := newEnv()
	m := mustNew(t, e.config())

	first, next := m.X509Slots()
	if first.Status != ca.SlotActive || first.AuthorityID == "" || next.AuthorityID != "" {
		t.Fatalf("start: current %+v next %+v", first, next)
	}
	if first.AuthorityID != ca.KeyIDString(m.ActiveX509CA().SubjectKeyId) {
		t.Fatalf("authority ID %q is not the CA's subject key ID", first.AuthorityID)
	}
	if _, err := m.ActivateX509CA(ctx, first.AuthorityID); err == nil {
		t.Fatal("activated the active CA")
	}

	prep, err := m.PrepareX509CA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if prep.Status != ca.SlotPrepared || prep.AuthorityID == first.AuthorityID {
		t.Fatalf("prepared %+v", prep)
	}
	if _, n := m.X509Slots(); n != prep {
		t.Fatalf("next slot %+v, want %+v", n, prep)
	}
	if got := len(e.store.bundle(t, td).X509Authorities); got != 2 {
		t.Fatalf("bundle has %d X.509 authorities after prepare, want 2", got)
	}
	// Still signing with the first CA.
	if id := ca.KeyIDString(m.ActiveX509CA().SubjectKeyId); id != first.AuthorityID {
		t.Fatalf("active CA changed on prepare: %s", id)
	}
	if _, err := m.ActivateX509CA(ctx, "00"); err == nil {
		t.Fatal("activated an unknown authority")
	}
	act, err := m.ActivateX509CA(ctx, prep.AuthorityID)
	if err != nil {
		t.Fatal(err)
	}
	cur, old := m.X509Slots()
	if act.AuthorityID != prep.AuthorityID || cur.AuthorityID != prep.AuthorityID || cur.Status != ca.SlotActive ||
		old.AuthorityID != first.AuthorityID || old.Status != ca.SlotOld {
		t.Fatalf("after activate: current %+v old %+v", cur, old)
	}
	v := readJournal(t, e.store)
	if st := v.x509Status(); len(st) != 2 || st["A"] == st["B"] || (st["A"] != "old" && st["B"] != "old") {
		t.Fatalf("journal statuses %v", st)
	}
	// A new SVID chains to the new CA.
	key, _ := leafKey(t)
	chain, err := m.SignX509SVID(ctx, ca.X509SVIDParams{SPIFFEID: spiffeid.RequireFromPath(td, "/w"), PublicKey: key.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if ca.KeyIDString(chain[0].AuthorityKeyId) != prep.AuthorityID {
		t.Fatal("SVID not signed by the activated CA")
	}

	// A restarted server keeps the forced rotation (the journal has it).
	m2 := mustNew(t, e.config())
	sameSlot := func(a, b ca.Slot) bool {
		return a.AuthorityID == b.AuthorityID && a.Status == b.Status && a.NotAfter.Equal(b.NotAfter)
	}
	if c2, o2 := m2.X509Slots(); !sameSlot(c2, cur) || !sameSlot(o2, old) {
		t.Fatalf("after restart: current %+v old %+v, want %+v %+v", c2, o2, cur, old)
	}

	// Revoking before tainting is refused, as SPIRE refuses it.
	var aerr *ca.AuthorityError
	if err := m.RevokeX509Authority(ctx, old.AuthorityID); !errors.As(err, &aerr) || aerr.Msg != "it is not possible to revoke an untainted root CA" {
		t.Fatalf("revoke untainted: %v", err)
	}
	select {
	case <-m.X509AuthorityTainted():
		t.Fatal("tainted signal before any taint")
	default:
	}
	if err := m.TaintX509Authority(ctx, old.AuthorityID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.X509AuthorityTainted():
	default:
		t.Fatal("no tainted signal")
	}
	if err := m.TaintX509Authority(ctx, old.AuthorityID); !errors.As(err, &aerr) || aerr.Msg != "root CA is already tainted" {
		t.Fatalf("taint twice: %v", err)
	}
	if err := m.TaintX509Authority(ctx, "abcd"); !errors.As(err, &aerr) || !aerr.NotFound {
		t.Fatalf("taint unknown: %v", err)
	}
	b := e.store.bundle(t, td)
	tainted := 0
	for _, a := range b.X509Authorities {
		c, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			t.Fatal(err)
		}
		if a.Tainted != (ca.KeyIDString(c.SubjectKeyId) == old.AuthorityID) {
			t.Fatalf("authority %x tainted=%v", c.SubjectKeyId, a.Tainted)
		}
		if a.Tainted {
			tainted++
		}
	}
	if tainted != 1 {
		t.Fatalf("%d tainted authorities, want 1", tainted)
	}

	if err := m.RevokeX509Authority(ctx, old.AuthorityID); err != nil {
		t.Fatal(err)
	}
	bundle := e.store.x509Bundle(t, td)
	if got := bundle.X509Authorities(); len(got) != 1 || ca.KeyIDString(got[0].SubjectKeyId) != prep.AuthorityID {
		t.Fatalf("bundle after revoke holds %d authorities", len(got))
	}
	if _, _, err := x509svid.Verify(chain, bundle); err != nil {
		t.Fatalf("new SVID does not verify after revoke: %v", err)
	}
	if err := m.RevokeX509Authority(ctx, old.AuthorityID); !errors.As(err, &aerr) || !aerr.NotFound {
		t.Fatalf("revoke twice: %v", err)
	}
	// The scheduled rotation carries on from the forced one.
	e.clock.Set(e.clock.Now().Add(3*time.Hour + time.Minute))
	if err := m.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, n := m.X509Slots(); n.Status != ca.SlotPrepared {
		t.Fatalf("half-life rotation after a forced one: next %+v", n)
	}
}

func TestForcedJWTRotation(t *testing.T) {
	ctx := context.Background()
	e := newEnv()
	m := mustNew(t, e.config())
	first, _ := m.JWTSlots()
	if first.AuthorityID != m.JWTKeyID() {
		t.Fatalf("JWT authority ID %q, want kid %q", first.AuthorityID, m.JWTKeyID())
	}
	prep, err := m.PrepareJWTKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := m.HasJWTKey(ctx, prep.AuthorityID); err != nil || !ok {
		t.Fatalf("prepared key not in the bundle: %v %v", ok, err)
	}
	if _, err := m.ActivateJWTKey(ctx, first.AuthorityID); err == nil {
		t.Fatal("activated the active key")
	}
	if _, err := m.ActivateJWTKey(ctx, prep.AuthorityID); err != nil {
		t.Fatal(err)
	}
	if m.JWTKeyID() != prep.AuthorityID {
		t.Fatal("JWT key not switched")
	}
	var aerr *ca.AuthorityError
	if err := m.RevokeJWTKey(ctx, first.AuthorityID); !errors.As(err, &aerr) || aerr.Msg != "it is not possible to revoke an untainted key" {
		t.Fatalf("revoke untainted: %v", err)
	}
	if err := m.TaintJWTKey(ctx, first.AuthorityID); err != nil {
		t.Fatal(err)
	}
	if err := m.TaintJWTKey(ctx, first.AuthorityID); !errors.As(err, &aerr) || aerr.Msg != "key is already tainted" {
		t.Fatalf("taint twice: %v", err)
	}
	if err := m.RevokeJWTKey(ctx, first.AuthorityID); err != nil {
		t.Fatal(err)
	}
	if ok, _ := m.HasJWTKey(ctx, first.AuthorityID); ok {
		t.Fatal("revoked key still in the bundle")
	}
	if err := m.TaintJWTKey(ctx, "nope"); !errors.As(err, &aerr) || !aerr.NotFound {
		t.Fatalf("taint unknown: %v", err)
	}
}
