package pluginbundle_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	plugintypes "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/types"
	"google.golang.org/protobuf/proto"

	"github.com/spiffe-hw/spire-hw/server/pluginbundle"
)

// testBundle is a bundle with one real CA certificate and one real JWT key,
// both tainted, so every field has something to carry.
func testBundle(t *testing.T) *types.Bundle {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return &types.Bundle{
		TrustDomain:     "example.org",
		RefreshHint:     300,
		SequenceNumber:  7,
		X509Authorities: []*types.X509Certificate{{Asn1: der, Tainted: true}},
		JwtAuthorities:  []*types.JWTKey{{KeyId: "k1", PublicKey: pub, ExpiresAt: 1234, Tainted: true}},
	}
}

func TestFromAPI(t *testing.T) {
	valid := testBundle(t)
	want := &plugintypes.Bundle{
		TrustDomain:     "example.org",
		RefreshHint:     300,
		SequenceNumber:  7,
		X509Authorities: []*plugintypes.X509Certificate{{Asn1: valid.X509Authorities[0].Asn1, Tainted: true}},
		JwtAuthorities: []*plugintypes.JWTKey{{
			KeyId: "k1", PublicKey: valid.JwtAuthorities[0].PublicKey, ExpiresAt: 1234, Tainted: true,
		}},
	}
	for _, tc := range []struct {
		name    string
		mutate  func(*types.Bundle) *types.Bundle
		want    *plugintypes.Bundle
		wantErr string
	}{
		{name: "valid", mutate: func(b *types.Bundle) *types.Bundle { return b }, want: want},
		{name: "nil stays nil", mutate: func(*types.Bundle) *types.Bundle { return nil }, want: nil},
		{name: "no authorities", mutate: func(*types.Bundle) *types.Bundle { return &types.Bundle{TrustDomain: "example.org"} },
			want: &plugintypes.Bundle{TrustDomain: "example.org"}},
		{name: "empty trust domain", mutate: func(b *types.Bundle) *types.Bundle { b.TrustDomain = ""; return b },
			wantErr: "malformed trust domain"},
		{name: "bad trust domain", mutate: func(b *types.Bundle) *types.Bundle { b.TrustDomain = "Not A Domain"; return b },
			wantErr: "malformed trust domain"},
		{name: "empty certificate", mutate: func(b *types.Bundle) *types.Bundle { b.X509Authorities[0].Asn1 = nil; return b },
			wantErr: "invalid X.509 authority: missing X.509 certificate data"},
		{name: "garbage certificate", mutate: func(b *types.Bundle) *types.Bundle { b.X509Authorities[0].Asn1 = []byte("x"); return b },
			wantErr: "invalid X.509 authority: failed to parse X.509 certificate data"},
		{name: "key without id", mutate: func(b *types.Bundle) *types.Bundle { b.JwtAuthorities[0].KeyId = ""; return b },
			wantErr: "invalid JWT authority: missing key ID for JWT key"},
		{name: "key without public key", mutate: func(b *types.Bundle) *types.Bundle { b.JwtAuthorities[0].PublicKey = nil; return b },
			wantErr: `invalid JWT authority: missing public key for JWT key "k1"`},
		{name: "garbage public key", mutate: func(b *types.Bundle) *types.Bundle { b.JwtAuthorities[0].PublicKey = []byte("x"); return b },
			wantErr: `invalid JWT authority: failed to unmarshal public key for JWT key "k1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pluginbundle.FromAPI(tc.mutate(proto.Clone(valid).(*types.Bundle)))
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("FromAPI = %v, %v; want error %q", got, err, tc.wantErr)
				}
				if got != nil {
					t.Fatalf("FromAPI returned %v with its error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tc.want) {
				t.Fatalf("FromAPI = %v, want %v", got, tc.want)
			}
		})
	}
}
