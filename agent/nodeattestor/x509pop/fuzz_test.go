package x509pop

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
)

// FuzzRespond: the challenge comes from the server over the network; a
// malformed one must be refused without panicking.
func FuzzRespond(f *testing.F) {
	for _, s := range []string{
		`{"ecdsa_signature":{"nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}`,
		`{"rsa_signature":{"nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}`,
		`{"ecdsa_signature":{"nonce":"AA=="}}`, `{"ecdsa_signature":null}`, `{}`, `null`, "\x00",
	} {
		f.Add([]byte(s))
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "f"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		f.Fatal(err)
	}
	a, err := NewFromKey([][]byte{der}, key)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = a.Respond(context.Background(), b)
	})
}
