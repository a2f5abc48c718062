package upstream

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // RFC 5280 key identifier method, not a security use
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// backdate absorbs clock skew between the server and relying parties.
const backdate = 10 * time.Second

// Disk is an Authority backed by PEM files (plugin_data keys cert_file_path,
// key_file_path, bundle_file_path). The files are re-read on every mint so
// an operator can replace the upstream CA without restarting the server.
type Disk struct {
	certFilePath, keyFilePath, bundleFilePath string
	now                                       func() time.Time
}

var _ Authority = (*Disk)(nil)

// NewDisk checks the files once, so a bad configuration fails at start-up.
//
// certFilePath holds the upstream CA certificate first, then any
// intermediates between it and a root. keyFilePath holds its private key
// (PKCS #1, PKCS #8 or SEC 1 PEM). bundleFilePath holds the root
// certificates; it may be empty only when the upstream certificate is itself
// a self-signed root.
func NewDisk(certFilePath, keyFilePath, bundleFilePath string) (*Disk, error) {
	if certFilePath == "" || keyFilePath == "" {
		return nil, errors.New("upstream: disk: cert_file_path and key_file_path are required")
	}
	d := &Disk{certFilePath: certFilePath, keyFilePath: keyFilePath, bundleFilePath: bundleFilePath, now: time.Now}
	if _, err := d.load(); err != nil {
		return nil, err
	}
	return d, nil
}

type material struct {
	cert          *x509.Certificate
	intermediates []*x509.Certificate
	roots         []*x509.Certificate
	signer        crypto.Signer
}

func (d *Disk) load() (*material, error) {
	certPEM, err := os.ReadFile(d.certFilePath)
	if err != nil {
		return nil, fmt.Errorf("upstream: disk: cert_file_path: %w", err)
	}
	certs, err := parseCertificatesPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("upstream: disk: cert_file_path %s: %w", d.certFilePath, err)
	}
	keyPEM, err := os.ReadFile(d.keyFilePath)
	if err != nil {
		return nil, fmt.Errorf("upstream: disk: key_file_path: %w", err)
	}
	signer, err := parsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("upstream: disk: key_file_path %s: %w", d.keyFilePath, err)
	}
	m := &material{cert: certs[0], intermediates: certs[1:], signer: signer}

	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(m.cert.PublicKey) {
		return nil, fmt.Errorf("upstream: disk: key in %s does not match the certificate in %s", d.keyFilePath, d.certFilePath)
	}
	if !m.cert.BasicConstraintsValid || !m.cert.IsCA {
		return nil, fmt.Errorf("upstream: disk: certificate in %s is not a CA", d.certFilePath)
	}
	if m.cert.KeyUsage != 0 && m.cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("upstream: disk: certificate in %s lacks the keyCertSign key usage", d.certFilePath)
	}

	if d.bundleFilePath == "" {
		if !bytes.Equal(m.cert.RawSubject, m.cert.RawIssuer) || m.cert.CheckSignatureFrom(m.cert) != nil {
			return nil, fmt.Errorf("upstream: disk: certificate in %s is not self-signed, so bundle_file_path is required", d.certFilePath)
		}
		m.roots = []*x509.Certificate{m.cert}
		return m, nil
	}
	bundlePEM, err := os.ReadFile(d.bundleFilePath)
	if err != nil {
		return nil, fmt.Errorf("upstream: disk: bundle_file_path: %w", err)
	}
	if m.roots, err = parseCertificatesPEM(bundlePEM); err != nil {
		return nil, fmt.Errorf("upstream: disk: bundle_file_path %s: %w", d.bundleFilePath, err)
	}
	if _, err := m.verify(m.cert, d.now()); err != nil {
		return nil, fmt.Errorf("upstream: disk: certificate in %s does not chain to the roots in %s: %w", d.certFilePath, d.bundleFilePath, err)
	}
	return m, nil
}

// verify checks cert against the roots through the file's intermediates.
func (m *material) verify(cert *x509.Certificate, now time.Time) ([][]*x509.Certificate, error) {
	roots := x509.NewCertPool()
	for _, r := range m.roots {
		roots.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range append([]*x509.Certificate{m.cert}, m.intermediates...) {
		inter.AddCert(c)
	}
	return cert.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
}

// MintX509CA signs csrDER as an intermediate CA. The CSR must carry exactly
// one URI SAN, the trust domain's SPIFFE ID (spiffe://<td>), which is copied
// into the certificate together with the CSR's subject.
func (d *Disk) MintX509CA(ctx context.Context, csrDER []byte, ttl time.Duration) ([]*x509.Certificate, []*x509.Certificate, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("upstream: disk: mint: %w", err)
	}
	if ttl <= 0 {
		return nil, nil, fmt.Errorf("upstream: disk: mint: ttl %s is not positive", ttl)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, nil, fmt.Errorf("upstream: disk: mint: parse CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, fmt.Errorf("upstream: disk: mint: CSR signature: %w", err)
	}
	if len(csr.URIs) != 1 {
		return nil, nil, fmt.Errorf("upstream: disk: mint: CSR has %d URI SANs, want exactly one trust domain ID", len(csr.URIs))
	}
	id, err := spiffeid.FromURI(csr.URIs[0])
	if err != nil {
		return nil, nil, fmt.Errorf("upstream: disk: mint: CSR URI SAN: %w", err)
	}
	if id.Path() != "" {
		return nil, nil, fmt.Errorf("upstream: disk: mint: CSR URI SAN %q is not a trust domain ID", id)
	}

	m, err := d.load()
	if err != nil {
		return nil, nil, err
	}
	now := d.now()
	notAfter := now.Add(ttl)
	if notAfter.After(m.cert.NotAfter) {
		notAfter = m.cert.NotAfter
	}
	if !notAfter.After(now) {
		return nil, nil, fmt.Errorf("upstream: disk: mint: upstream certificate expired at %s", m.cert.NotAfter)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, fmt.Errorf("upstream: disk: mint: %w", err)
	}
	ski, err := subjectKeyID(csr.PublicKey)
	if err != nil {
		return nil, nil, fmt.Errorf("upstream: disk: mint: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               csr.Subject,
		URIs:                  csr.URIs,
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          ski,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, m.cert, csr.PublicKey, m.signer)
	if err != nil {
		return nil, nil, fmt.Errorf("upstream: disk: mint: sign: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("upstream: disk: mint: %w", err)
	}
	if _, err := m.verify(ca, now); err != nil {
		return nil, nil, fmt.Errorf("upstream: disk: mint: minted CA does not verify: %w", err)
	}

	chain := []*x509.Certificate{ca}
	for _, c := range append([]*x509.Certificate{m.cert}, m.intermediates...) {
		if !containsCert(m.roots, c) {
			chain = append(chain, c)
		}
	}
	return chain, m.roots, nil
}

func containsCert(set []*x509.Certificate, c *x509.Certificate) bool {
	for _, s := range set {
		if s.Equal(c) {
			return true
		}
	}
	return false
}

// parseCertificatesPEM returns every CERTIFICATE block of a PEM file, in
// order; other block types are skipped. At least one is required.
func parseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return certs, nil
}

// parsePrivateKeyPEM returns the first private key of a PEM file: PKCS #8
// ("PRIVATE KEY"), PKCS #1 ("RSA PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY").
// Other blocks, such as the "EC PARAMETERS" openssl writes first, are
// skipped; encrypted keys are not supported.
func parsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key block")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("encrypted private keys are not supported")
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", block.Type, err)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s: %T cannot sign", block.Type, key)
		}
		return s, nil
	}
}

func randomSerial() (*big.Int, error) {
	// 128 random bits; a zero serial is not allowed, so retry the
	// (astronomically unlikely) zero.
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// subjectKeyID is RFC 5280 method 1: SHA-1 over the subjectPublicKey bits.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("subject key id: %w", err)
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("subject key id: %w", err)
	}
	sum := sha1.Sum(spki.PublicKey.Bytes) //nolint:gosec // see import
	return sum[:], nil
}
