package api

import (
	"context"
	"crypto/x509"
	"log/slog"
	"math/big"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe-hw/spire-hw/wire/push"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"
)

// TestNoticesSeeFederatedBundlesElsewhere: a foreign bundle written
// straight to the database, as the federation refresher or another server
// sharing it writes one, reaches a federating agent's stream through the
// feed's periodic look.
func TestNoticesSeeFederatedBundlesElsewhere(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := sqlitetest.Open(t)
	td := spiffeid.RequireTrustDomainFromString("example.org")
	a := New(Config{TrustDomain: td, DataStore: st, Log: slog.New(slog.DiscardHandler)})
	id := spiffeid.RequireFromPath(td, "/spire/agent/join_token/n1")
	node := &datastore.AttestedNode{SPIFFEID: id.String(), AttestationType: "join_token", CertSerial: "10", CertNotAfter: time.Now().Add(time.Hour).Unix()}
	if err := st.CreateAttestedNode(ctx, node); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{td.Name(), "td2.org"} {
		if _, err := st.CreateBundle(ctx, &types.Bundle{TrustDomain: name, SequenceNumber: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.CreateEntry(ctx, &types.Entry{ParentId: &types.SPIFFEID{TrustDomain: td.Name(), Path: id.Path()},
		SpiffeId: &types.SPIFFEID{TrustDomain: td.Name(), Path: "/w"}, Selectors: []*types.Selector{{Type: "unix", Value: "uid:1"}},
		FederatesWith: []string{"spiffe://td2.org"}}); err != nil {
		t.Fatal(err)
	}
	caller := &Caller{Role: RoleAgent, ID: id, Node: node,
		Cert: &x509.Certificate{SerialNumber: big.NewInt(10), NotAfter: time.Now().Add(time.Hour)}}
	cctx := context.WithValue(ctx, callerKey{}, caller)
	stream := &noticeStream{ctx: cctx, sent: make(chan push.Change, 16)}
	done := make(chan error, 1)
	go func() { done <- (&NoticeService{api: a}).Subscribe(stream) }()
	expectNotice(t, stream.sent, push.Open, 5*time.Second)

	// The agent's sync after Open: entries, bundle, td2's bundle.
	sync := func() {
		t.Helper()
		if _, _, err := a.syncedEntries(cctx, caller); err != nil {
			t.Fatal(err)
		}
		bs := &BundleService{api: a}
		if _, err := bs.GetBundle(cctx, &bundlev1.GetBundleRequest{}); err != nil {
			t.Fatal(err)
		}
		if _, err := bs.GetFederatedBundle(cctx, &bundlev1.GetFederatedBundleRequest{TrustDomain: "td2.org"}); err != nil {
			t.Fatal(err)
		}
	}
	sync()
	select {
	case c := <-stream.sent:
		t.Fatalf("notice %v after a full sync", c)
	case <-time.After(1500 * time.Millisecond):
	}

	if _, err := st.SetBundle(ctx, &types.Bundle{TrustDomain: "td2.org", SequenceNumber: 2}); err != nil {
		t.Fatal(err)
	}
	// One look a second: nobody told this server.
	expectNotice(t, stream.sent, push.FederatedBundles, 4*time.Second)
	sync()
	select {
	case c := <-stream.sent:
		t.Fatalf("notice %v after the agent fetched the new bundle", c)
	case <-time.After(1500 * time.Millisecond):
	}
	cancel()
	<-done
}

// bundleDigest moves with every field the agent uses, and only with them.
func TestBundleDigest(t *testing.T) {
	base := &types.Bundle{TrustDomain: "td2.org", RefreshHint: 300, SequenceNumber: 4,
		X509Authorities: []*types.X509Certificate{{Asn1: []byte("ca1")}},
		JwtAuthorities:  []*types.JWTKey{{KeyId: "k1", PublicKey: []byte("pk"), ExpiresAt: 99}}}
	d := bundleDigest(base)
	if d == 0 || bundleDigest(proto.Clone(base).(*types.Bundle)) != d {
		t.Fatal("equal bundles, different digests (or 0)")
	}
	for name, change := range map[string]func(*types.Bundle){
		"trust domain": func(b *types.Bundle) { b.TrustDomain = "td3.org" },
		"x509 added": func(b *types.Bundle) {
			b.X509Authorities = append(b.X509Authorities, &types.X509Certificate{Asn1: []byte("ca2")})
		},
		"x509 changed":   func(b *types.Bundle) { b.X509Authorities[0].Asn1 = []byte("ca9") },
		"x509 tainted":   func(b *types.Bundle) { b.X509Authorities[0].Tainted = true },
		"jwt removed":    func(b *types.Bundle) { b.JwtAuthorities = nil },
		"jwt key ID":     func(b *types.Bundle) { b.JwtAuthorities[0].KeyId = "k2" },
		"jwt public key": func(b *types.Bundle) { b.JwtAuthorities[0].PublicKey = []byte("pk2") },
		"jwt expiry":     func(b *types.Bundle) { b.JwtAuthorities[0].ExpiresAt = 100 },
		"jwt tainted":    func(b *types.Bundle) { b.JwtAuthorities[0].Tainted = true },
		"refresh hint":   func(b *types.Bundle) { b.RefreshHint = 301 },
		"sequence":       func(b *types.Bundle) { b.SequenceNumber = 5 },
		// Field boundaries count: "ca1" + "" is not "ca" + "1".
		"split bytes": func(b *types.Bundle) {
			b.X509Authorities = []*types.X509Certificate{{Asn1: []byte("ca")}, {Asn1: []byte("1")}}
		},
	} {
		b := proto.Clone(base).(*types.Bundle)
		change(b)
		if bundleDigest(b) == d {
			t.Errorf("%s: same digest", name)
		}
	}
}

// federatedOf names each foreign domain once, sorted, in the datastore's
// spelling, and leaves out the server's own domain and malformed names.
func TestFederatedOf(t *testing.T) {
	own := spiffeid.RequireTrustDomainFromString("example.org")
	snap := newSnapshot([]*types.Entry{
		{Id: "a", FederatesWith: []string{"spiffe://td3.org", "td2.org"}},
		{Id: "b", FederatesWith: []string{"td2.org", "example.org", "not a domain"}},
		{Id: "c"},
	})
	got := snap.federatedOf([]int32{0, 1, 2}, own)
	if len(got) != 2 || got[0] != "td2.org" || got[1] != "td3.org" {
		t.Fatalf("federatedOf = %q, want [td2.org td3.org]", got)
	}
	if snap.federatedOf([]int32{2}, own) != nil {
		t.Fatal("entries federating with nothing name domains")
	}
}
