// Package testpki makes throwaway X.509 hierarchies (root, intermediates,
// leaves with chosen key types and usages) for tests and demos of
// certificate-based node attestation such as x509pop.
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"
)

// CA is a certificate authority that can issue intermediates and leaves.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewRoot returns a self-signed root CA valid for a day.
func NewRoot(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("testpki: root key: %w", err)
	}
	tmpl := caTemplate(name)
	cert, err := sign(tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Intermediate issues a subordinate CA.
func (ca *CA) Intermediate(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("testpki: intermediate key: %w", err)
	}
	cert, err := sign(caTemplate(name), ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Leaf describes a leaf certificate; the zero value is an ECDSA P-256
// certificate with digitalSignature usage, valid for an hour.
type Leaf struct {
	CommonName string
	// KeyType is "ecdsa" (default), "rsa" or "ed25519".
	KeyType string
	// KeyUsage defaults to digitalSignature; use NoKeyUsage for none.
	KeyUsage x509.KeyUsage
	// ExtKeyUsage defaults to clientAuth; a TLS server's leaf asks for
	// serverAuth with its IPAddresses or DNSNames.
	ExtKeyUsage []x509.ExtKeyUsage
	URIs        []*url.URL
	IPAddresses []net.IP
	DNSNames    []string
	Serial      *big.Int
	NotBefore   time.Time
	NotAfter    time.Time
}

// NoKeyUsage asks for a leaf with an empty key usage.
const NoKeyUsage x509.KeyUsage = -1

// Issue signs a leaf certificate and returns it with its key.
func (ca *CA) Issue(l Leaf) (*x509.Certificate, crypto.Signer, error) {
	var key crypto.Signer
	var err error
	switch l.KeyType {
	case "", "ecdsa":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "rsa":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, nil, fmt.Errorf("testpki: unknown key type %q", l.KeyType)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("testpki: leaf key: %w", err)
	}
	if l.Serial == nil {
		l.Serial = randSerial()
	}
	if l.NotBefore.IsZero() {
		l.NotBefore = time.Now().Add(-time.Minute)
	}
	if l.NotAfter.IsZero() {
		l.NotAfter = time.Now().Add(time.Hour)
	}
	switch l.KeyUsage {
	case 0:
		l.KeyUsage = x509.KeyUsageDigitalSignature
	case NoKeyUsage:
		l.KeyUsage = 0
	}
	if l.ExtKeyUsage == nil {
		l.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: l.Serial,
		Subject:      pkix.Name{CommonName: l.CommonName},
		NotBefore:    l.NotBefore,
		NotAfter:     l.NotAfter,
		KeyUsage:     l.KeyUsage,
		ExtKeyUsage:  l.ExtKeyUsage,
		URIs:         l.URIs,
		IPAddresses:  l.IPAddresses,
		DNSNames:     l.DNSNames,
	}
	cert, err := sign(tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

func caTemplate(name string) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

func randSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n.Add(n, big.NewInt(1))
}

func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, fmt.Errorf("testpki: sign %q: %w", tmpl.Subject.CommonName, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("testpki: parse %q: %w", tmpl.Subject.CommonName, err)
	}
	return c, nil
}

// CertsPEM encodes certificates as PEM blocks, in order.
func CertsPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// KeyPEM encodes a private key as PKCS#8 PEM.
func KeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("testpki: marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
