package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"math/big"
	"testing"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// TestBundleCache: GetBundle answers from memory within bundleTTL, an
// invalidation (an append through this API) shows at once, and a change
// made behind the API (the CA publishing, another server) within the TTL.
func TestBundleCache(t *testing.T) {
	ctx := context.Background()
	st := sqlitetest.Open(t)
	authority := func(n int64) *types.X509Certificate {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(n), IsCA: true, BasicConstraintsValid: true, NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		return &types.X509Certificate{Asn1: der}
	}
	appendOne := func(n int64) {
		if _, err := st.AppendBundle(ctx, &types.Bundle{TrustDomain: "example.org", X509Authorities: []*types.X509Certificate{authority(n)}}); err != nil {
			t.Fatal(err)
		}
	}
	appendOne(1)
	c := &bundleCache{ds: st, td: "example.org"}
	count := func() int {
		b, err := c.get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(b.X509Authorities)
	}
	if n := count(); n != 1 {
		t.Fatalf("%d authorities, want 1", n)
	}
	appendOne(2)
	c.invalidate()
	if n := count(); n != 2 {
		t.Fatalf("after an invalidated append: %d authorities, want 2", n)
	}
	appendOne(3)
	time.Sleep(bundleTTL)
	if n := count(); n != 3 {
		t.Fatalf("%v after an append behind the API: %d authorities, want 3", bundleTTL, n)
	}
}
