package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"log/slog"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// bundleValid is the rule, written independently of the code under test,
// for the authorities a bundle from an admin or a federation peer may
// carry: every X.509 authority a certificate, every JWT authority a key ID
// and a public key.
func bundleValid(b *types.Bundle) bool {
	for _, c := range b.X509Authorities {
		if _, err := x509.ParseCertificate(c.GetAsn1()); err != nil {
			return false
		}
	}
	for _, k := range b.JwtAuthorities {
		if k.GetKeyId() == "" {
			return false
		}
		if _, err := x509.ParsePKIXPublicKey(k.GetPublicKey()); err != nil {
			return false
		}
	}
	return true
}

// FuzzBundleValidation sends bundles built from fuzzed choices (a trust
// domain, which authorities from a pool of good and junk ones, in which
// order and how often, refresh hint and sequence number) through the
// bundle API as an admin would (BatchSetFederatedBundle, AppendBundle),
// over a real SQLite store and without a network. No input may panic; a
// bundle is accepted exactly when bundleValid says so (and, when
// federated, when it names a trust domain other than the server's); what
// was accepted reads back unchanged; and the store can prune what the API
// let in, since pruning parses every stored X.509 authority. The junk is
// the fuzzer's bytes as DER; whole certificates in the input made it spend
// its time minimizing kilobytes.
func FuzzBundleValidation(f *testing.F) {
	ctx := context.Background()
	own := spiffeid.RequireTrustDomainFromString("example.org")
	store := sqlitetest.Open(f)
	svc := &BundleService{api: New(Config{TrustDomain: own, DataStore: store, Log: slog.New(slog.DiscardHandler)})}

	root, err := testpki.NewRoot("federated root")
	if err != nil {
		f.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		f.Fatal(err)
	}
	expires := time.Now().Add(time.Hour).Unix()
	// pick's nibbles, lowest first, choose the authorities: 0 the root, 1
	// junk DER, 2 an empty certificate; 3 a good JWT key, 4 kid with junk
	// as key, 5 kid with the good key, 6 the good key without an ID, 7 kid
	// without a key; 8 and above nothing.
	build := func(td string, pick uint32, junk []byte, kid string, refresh int64, seq uint64) *types.Bundle {
		b := &types.Bundle{TrustDomain: td, RefreshHint: refresh, SequenceNumber: seq}
		for ; pick != 0; pick >>= 4 {
			switch pick & 0xf {
			case 0:
				b.X509Authorities = append(b.X509Authorities, &types.X509Certificate{Asn1: root.Cert.Raw})
			case 1:
				b.X509Authorities = append(b.X509Authorities, &types.X509Certificate{Asn1: junk})
			case 2:
				b.X509Authorities = append(b.X509Authorities, &types.X509Certificate{})
			case 3:
				b.JwtAuthorities = append(b.JwtAuthorities, &types.JWTKey{KeyId: "k1", PublicKey: pub, ExpiresAt: expires})
			case 4:
				b.JwtAuthorities = append(b.JwtAuthorities, &types.JWTKey{KeyId: kid, PublicKey: junk})
			case 5:
				b.JwtAuthorities = append(b.JwtAuthorities, &types.JWTKey{KeyId: kid, PublicKey: pub})
			case 6:
				b.JwtAuthorities = append(b.JwtAuthorities, &types.JWTKey{PublicKey: pub})
			case 7:
				b.JwtAuthorities = append(b.JwtAuthorities, &types.JWTKey{KeyId: kid})
			}
		}
		return b
	}
	for _, seed := range []struct {
		td      string
		pick    uint32
		junk    []byte
		kid     string
		refresh int64
		seq     uint64
	}{
		{"other.org", 0x30, nil, "", 300, 7},
		{"spiffe://other.org", 0x88800, nil, "", 0, 0},
		{"example.org", 0x80, nil, "", 0, 0},
		{"Other.Org", 0x80, nil, "", 0, 0},
		{"other.org", 0x1, root.Cert.Raw[:40], "", 0, 0},
		{"other.org", 0x2, nil, "", 0, 0},
		{"other.org", 0x6, nil, "", 0, 0},
		{"other.org", 0x4, pub[1:], "k2", 0, 0},
		{"other.org", 0x75, nil, "k2", -1, 1 << 63},
		{"other.org", 0x54, pub, "k2", 0, 0},
		{"", 0x8, nil, "", 0, 0},
	} {
		f.Add(seed.td, seed.pick, seed.junk, seed.kid, seed.refresh, seed.seq)
	}
	f.Fuzz(func(t *testing.T, tdName string, pick uint32, junk []byte, kid string, refresh int64, seq uint64) {
		if !utf8.ValidString(tdName) || !utf8.ValidString(kid) {
			return // not a protobuf string: gRPC refuses the message
		}
		in := build(tdName, pick, junk, kid, refresh, seq)
		valid := bundleValid(in)

		// Federated: the bundle as given.
		td, tdErr := spiffeid.TrustDomainFromString(in.TrustDomain)
		resp, err := svc.BatchSetFederatedBundle(ctx, &bundlev1.BatchSetFederatedBundleRequest{Bundle: []*types.Bundle{in}})
		if err != nil || len(resp.Results) != 1 {
			t.Fatalf("BatchSetFederatedBundle: %v, %v", resp, err)
		}
		r := resp.Results[0]
		wantOK := valid && tdErr == nil && td != own
		switch code := codes.Code(r.Status.GetCode()); {
		case wantOK && code != codes.OK:
			t.Fatalf("valid federated bundle refused: %v", r.Status)
		case !wantOK && code == codes.OK:
			t.Fatalf("invalid federated bundle accepted (trust domain error %v, authorities valid %v)", tdErr, valid)
		case !wantOK && code != codes.InvalidArgument:
			t.Fatalf("invalid federated bundle refused with %v: %v", code, r.Status)
		}
		if wantOK {
			want := proto.Clone(in).(*types.Bundle)
			want.TrustDomain = td.Name()
			got, err := svc.GetFederatedBundle(ctx, &bundlev1.GetFederatedBundleRequest{TrustDomain: td.Name()})
			if err != nil {
				t.Fatalf("GetFederatedBundle after set: %v", err)
			}
			if !proto.Equal(got, want) || !proto.Equal(r.Bundle, want) {
				t.Fatalf("stored %v, returned %v; set %v", got, r.Bundle, want)
			}
			if _, err := store.PruneBundle(ctx, td.Name(), time.Now()); err != nil {
				t.Fatalf("the store cannot prune a bundle the API accepted: %v", err)
			}
			if err := store.DeleteBundle(ctx, td.Name()); err != nil {
				t.Fatal(err)
			}
		}

		// The server's own: the same authorities appended.
		wantOK = valid && len(in.X509Authorities)+len(in.JwtAuthorities) > 0
		got, err := svc.AppendBundle(ctx, &bundlev1.AppendBundleRequest{X509Authorities: in.X509Authorities, JwtAuthorities: in.JwtAuthorities})
		switch {
		case wantOK && err != nil:
			t.Fatalf("valid authorities refused: %v", err)
		case !wantOK && err == nil:
			t.Fatal("invalid authorities appended")
		case !wantOK:
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("invalid authorities refused with %v", err)
			}
			return
		}
		for _, a := range in.X509Authorities {
			if !containsProto(got.X509Authorities, a) {
				t.Fatal("appended X.509 authority missing from the bundle")
			}
		}
		for _, k := range in.JwtAuthorities {
			found := false
			for _, have := range got.JwtAuthorities {
				found = found || have.KeyId == k.KeyId
			}
			if !found {
				t.Fatalf("appended JWT authority %q missing from the bundle", k.KeyId)
			}
		}
		if _, err := store.PruneBundle(ctx, own.Name(), time.Now()); err != nil {
			t.Fatalf("the store cannot prune authorities the API appended: %v", err)
		}
		if err := store.DeleteBundle(ctx, own.Name()); err != nil && !errors.Is(err, datastore.ErrNotFound) {
			t.Fatal(err)
		}
		svc.api.bundle.invalidate()
	})
}

func containsProto[M proto.Message](list []M, m M) bool {
	for _, x := range list {
		if proto.Equal(x, m) {
			return true
		}
	}
	return false
}
