package manager

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

func TestRenewTime(t *testing.T) {
	nb := time.Unix(1000, 0)
	na := nb.Add(100 * time.Second)
	if got := renewTime(nb, na, 0); !got.Equal(nb.Add(50 * time.Second)) {
		t.Fatalf("no jitter: %v", got.Sub(nb))
	}
	if got := renewTime(nb, na, 0.999); got.Before(nb.Add(40*time.Second)) || !got.Before(nb.Add(50*time.Second)) {
		t.Fatalf("max jitter: %v", got.Sub(nb))
	}
}

func TestNewCSR(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id := spiffeid.RequireFromString("spiffe://example.org/workload")
	der, err := newCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatal(err)
	}
	if len(csr.URIs) != 1 || csr.URIs[0].String() != id.String() || len(csr.DNSNames) != 0 {
		t.Fatalf("CSR SANs: URIs %v DNS %v, want exactly one URI %s", csr.URIs, csr.DNSNames, id)
	}
	if !key.PublicKey.Equal(csr.PublicKey) {
		t.Fatal("CSR for another key")
	}
	der, err = newCSR(key, spiffeid.ID{})
	if err != nil {
		t.Fatal(err)
	}
	if csr, _ = x509.ParseCertificateRequest(der); len(csr.URIs) != 0 {
		t.Fatal("agent CSR carries a URI")
	}
}

func TestSVIDsToRenew(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	mk := func(e *types.Entry, ttl time.Duration) cache.Identity {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		cert, err := ca.sign(spiffeid.RequireFromPath(testTD, e.SpiffeId.Path), key.Public(), ttl)
		if err != nil {
			t.Fatal(err)
		}
		return cache.Identity{Entry: e, SVID: heldSVID(t, []*x509.Certificate{cert}, key)}
	}
	fresh := workloadEntry("fresh", 1)
	old := workloadEntry("old", 1)
	missing := workloadEntry("missing", 1)
	bumped := workloadEntry("bumped", 2)
	renamed := workloadEntry("renamed", 1)
	svids := map[string]cache.Identity{
		"fresh":   mk(fresh, time.Hour),
		"old":     mk(old, time.Second), // NotBefore is 1 s ago: past half-life
		"bumped":  mk(workloadEntry("bumped", 1), time.Hour),
		"renamed": mk(&types.Entry{Id: "renamed", SpiffeId: &types.SPIFFEID{TrustDomain: testTD.Name(), Path: "/other"}, RevisionNumber: 1}, time.Hour),
	}
	tests := []struct {
		name  string
		entry *types.Entry
		want  bool
	}{
		{"valid SVID before half-life", fresh, false},
		{"past half-life", old, true},
		{"no SVID", missing, true},
		{"entry revision changed", bumped, true},
		{"SVID names another SPIFFE ID", renamed, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := svidsToRenew([]*types.Entry{tt.entry}, svids, now, nil)
			if (len(got) == 1) != tt.want {
				t.Fatalf("needs new SVID = %v, want %v", len(got) == 1, tt.want)
			}
		})
	}
}

// TestFreshRenewTime: a fresh credential is renewed at its (jittered)
// half-life, or, when that is at hand already (NotBefore backdated,
// NotAfter capped at the CA's expiry), a quarter of the way through what
// is left of it, never at once.
func TestFreshRenewTime(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	nb := now.Add(-10 * time.Second)
	for _, r := range []float64{0, 0.5, 0.999} {
		if got, want := freshRenewTime(nb, now.Add(time.Hour), now, r), renewTime(nb, now.Add(time.Hour), r); !got.Equal(want) {
			t.Fatalf("jitter %v: a full-length SVID renews at %v, want %v", r, got, want)
		}
		// Issued now, capped 13 s from now: its half-life is 1.5 s ahead
		// at most, sooner than a quarter of the 13 s left.
		if got := freshRenewTime(nb, now.Add(13*time.Second), now, r); !got.Equal(now.Add(3250 * time.Millisecond)) {
			t.Fatalf("jitter %v: a capped SVID renews in %v, want 3.25s", r, got.Sub(now))
		}
	}
}
