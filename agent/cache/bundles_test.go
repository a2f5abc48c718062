package cache

import (
	"context"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func bundleOf(t *testing.T, td spiffeid.TrustDomain) *spiffebundle.Bundle {
	t.Helper()
	id := svidFor(t, entry("x", "/ca"), time.Now().Add(time.Hour))
	certs, err := id.SVID.ParseCertificates()
	if err != nil {
		t.Fatal(err)
	}
	return spiffebundle.FromX509Authorities(td, certs)
}

func nextBundles(t *testing.T, s BundleSubscription) Bundles {
	t.Helper()
	select {
	case b, ok := <-s.Updates():
		if !ok {
			t.Fatal("subscription closed")
		}
		return b
	case <-time.After(5 * time.Second):
		t.Fatal("no bundle update")
	}
	return nil
}

func noBundles(t *testing.T, s BundleSubscription) {
	t.Helper()
	select {
	case b := <-s.Updates():
		t.Fatalf("unexpected bundle update %v", b)
	default:
	}
}

func TestSubscribeToBundles(t *testing.T) {
	c := New(td, nil, nil)
	fed := spiffeid.RequireTrustDomainFromString("fed.test")
	own := bundleOf(t, td)
	c.SetBundle(own)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := c.SubscribeToBundles(ctx)

	if b := nextBundles(t, s); len(b) != 1 || !b[td].Equal(own) {
		t.Fatalf("first set = %v, want the own bundle only", b)
	}
	// Entries and SVIDs change no bundle: no update.
	e := entry("a", "/a", sel("unix", "uid:1"))
	c.SetEntries(c.Entries())
	c.SetEntries(append(c.Entries(), e))
	c.SetSVIDs(map[string]Identity{"a": svidFor(t, e, time.Now().Add(time.Hour))})
	noBundles(t, s)

	fb := bundleOf(t, fed)
	c.SetFederatedBundles(map[spiffeid.TrustDomain]*spiffebundle.Bundle{fed: fb})
	if b := nextBundles(t, s); len(b) != 2 || !b[fed].Equal(fb) || !b[td].Equal(own) {
		t.Fatalf("after federating: %v", b)
	}
	// The same federated bundle again: no update.
	c.SetFederatedBundles(map[spiffeid.TrustDomain]*spiffebundle.Bundle{fed: fb})
	noBundles(t, s)

	// Two changes before the reader looks: it sees the latest only.
	own2 := bundleOf(t, td)
	c.SetBundle(own2)
	c.SetFederatedBundles(nil)
	if b := nextBundles(t, s); len(b) != 1 || !b[td].Equal(own2) {
		t.Fatalf("after rotation and removal: %v", b)
	}
	noBundles(t, s)

	cancel()
	select {
	case _, ok := <-s.Updates():
		if ok {
			t.Fatal("update after the context ended")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("subscription not finished when its context ended")
	}
	s.Finish() // a second Finish is harmless
	c.SetBundle(own)
}
