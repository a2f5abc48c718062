package client

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"
)

func seedCert(f *testing.F) []byte {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		f.Fatal(err)
	}
	return der
}

// FuzzParseBundle feeds arbitrary bundle messages, as a server could send
// them, to ParseBundle: it must fail cleanly, never panic.
func FuzzParseBundle(f *testing.F) {
	der := seedCert(f)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := x509.MarshalPKIXPublicKey(key.Public())
	good, _ := proto.Marshal(&types.Bundle{TrustDomain: "example.org", X509Authorities: []*types.X509Certificate{{Asn1: der}}, JwtAuthorities: []*types.JWTKey{{KeyId: "k", PublicKey: pub}}, RefreshHint: 300})
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte("\x0a\x0bexample.org\x12\x03\x0a\x01\x00"))
	td := spiffeid.RequireTrustDomainFromString("example.org")
	f.Fuzz(func(t *testing.T, data []byte) {
		b := new(types.Bundle)
		if proto.Unmarshal(data, b) != nil {
			return
		}
		sb, err := ParseBundle(td, b)
		if err == nil && len(sb.X509Authorities()) == 0 {
			t.Fatal("accepted a bundle without X.509 authorities")
		}
	})
}

// FuzzParseChain checks that certificate chains from the server never
// crash the parser.
func FuzzParseChain(f *testing.F) {
	der := seedCert(f)
	f.Add(der, []byte{})
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x01}, der)
	f.Fuzz(func(t *testing.T, a, b []byte) {
		chain, err := ParseChain([][]byte{a, b})
		if err == nil && len(chain) != 2 {
			t.Fatal("chain length changed")
		}
	})
}

func TestParseBundleRefusesOtherTrustDomain(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	if _, err := ParseBundle(td, &types.Bundle{TrustDomain: "evil.org"}); err == nil {
		t.Fatal("accepted a bundle for another trust domain")
	}
	if _, err := ParseBundle(td, nil); err == nil {
		t.Fatal("accepted a nil bundle")
	}
}
