package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"io"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/keymanager"
)

type wrongKey struct {
	crypto.Signer
	other     crypto.Signer
	inProcess bool
}

func (k wrongKey) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	return k.other.Sign(r, d, o)
}
func (k wrongKey) InProcess() bool { return k.inProcess }

func TestCreateCertificate(t *testing.T) {
	now := time.Now()
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, kt := range keymanager.KeyTypes {
		t.Run(kt.String(), func(t *testing.T) {
			caKey, err := keymanager.GenerateSigner(kt)
			if err != nil {
				t.Fatal(err)
			}
			caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: now, NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
			caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
			if err != nil {
				t.Fatal(err)
			}
			caCert, _ := x509.ParseCertificate(caDER)
			u, _ := url.Parse("spiffe://example.org/w")
			tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: now, NotAfter: now.Add(time.Minute), URIs: []*url.URL{u}}
			leaf, err := createCertificate(rand.Reader, tmpl, caCert, leafKey.Public(), caKey)
			if err != nil {
				t.Fatal(err)
			}
			if err := leaf.CheckSignatureFrom(caCert); err != nil {
				t.Fatalf("certificate does not verify: %v", err)
			}
			if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(leafKey.Public()) || leaf.URIs[0].String() != u.String() {
				t.Fatal("certificate does not carry the template")
			}
			other, _ := keymanager.GenerateSigner(kt)
			if _, err := createCertificate(rand.Reader, tmpl, caCert, leafKey.Public(), wrongKey{Signer: caKey, other: other}); err == nil {
				t.Fatal("a signer using the wrong key got a certificate out")
			}
		})
	}
}
