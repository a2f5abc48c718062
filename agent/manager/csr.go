package manager

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"net/url"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// newCSR returns a DER CSR for key. The server only takes the public key
// from it, but a workload CSR names its SPIFFE ID as the one URI SAN, as
// SPIRE's agent does, so that the request is self-describing in logs. The
// agent's own CSR carries no ID (zero id): the server assigns it.
func newCSR(key crypto.Signer, id spiffeid.ID) ([]byte, error) {
	tmpl := &x509.CertificateRequest{Subject: csrName}
	if !id.IsZero() {
		tmpl.URIs = []*url.URL{id.URL()}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("manager: create CSR: %w", err)
	}
	return der, nil
}

// workloadCSR is newCSR for a workload key: one made in this process
// (P-256, in memory) for a non-zero id; any other goes to newCSR. x509.CreateCertificateRequest verifies the signature it has
// just made (a guard against a faulty signer, which a key in this process's
// memory is not): in a profile of an agent minting 1,000 SVIDs that check
// was over half the cost of each CSR, and the server checks the signature
// anyway. The request is encoded here, its CertificationRequestInfo byte
// for byte the one x509 writes (TestWorkloadCSRAsX509), and signed once.
func workloadCSR(signer crypto.Signer, id spiffeid.ID) ([]byte, error) {
	key, ok := signer.(*ecdsa.PrivateKey)
	if !ok || id.IsZero() || key.Curve != elliptic.P256() {
		return newCSR(signer, id)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("manager: create CSR: %w", err)
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, 512))
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(0) // version 1
		b.AddBytes(csrSubject)
		b.AddBytes(spki)
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(oidExtensionRequest)
				b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1ObjectIdentifier(oidSubjectAltName)
							b.AddASN1(cbasn1.OCTET_STRING, func(b *cryptobyte.Builder) {
								b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
									b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) {
										b.AddBytes([]byte(id.URL().String()))
									})
								})
							})
						})
					})
				})
			})
		})
	})
	tbs, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("manager: create CSR: %w", err)
	}
	digest := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		return nil, fmt.Errorf("manager: create CSR: %w", err)
	}
	out := cryptobyte.NewBuilder(make([]byte, 0, len(tbs)+len(sig)+32))
	out.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidECDSAWithSHA256)
		})
		b.AddASN1BitString(sig)
	})
	return out.Bytes()
}

var (
	oidExtensionRequest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidECDSAWithSHA256  = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	// csrName is the subject of every CSR, as SPIRE's agent names it;
	// csrSubject is its DER.
	csrName    = pkix.Name{Country: []string{"US"}, Organization: []string{"SPIRE"}}
	csrSubject = func() []byte {
		der, err := asn1.Marshal(csrName.ToRDNSequence())
		if err != nil {
			panic(err)
		}
		return der
	}()
)
