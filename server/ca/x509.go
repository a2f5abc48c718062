package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // RFC 5280 key identifier method, not a security use
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-hw/spire-hw/server/keymanager"
)

// X509SVIDParams describes an X.509-SVID to sign.
type X509SVIDParams struct {
	SPIFFEID  spiffeid.ID
	PublicKey crypto.PublicKey
	// TTL is the requested lifetime; 0 means Config.X509SVIDTTL. The
	// certificate never outlives the CA.
	TTL time.Duration
	// DNSNames become DNS SANs; the first is also the subject CN.
	DNSNames []string
	// Subject is optional; empty means O=SPIRE, C=US as SPIRE issues.
	Subject pkix.Name
}

// SignX509SVID signs an X.509-SVID and returns the leaf followed by the
// intermediates a relying party needs to reach the bundle (none for a
// self-signed CA; the CA and upstream intermediates otherwise). The root is
// never included.
func (m *Manager) SignX509SVID(ctx context.Context, p X509SVIDParams) ([]*x509.Certificate, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ca: sign X.509-SVID: %w", err)
	}
	if err := m.checkID(p.SPIFFEID); err != nil {
		return nil, err
	}
	if p.SPIFFEID.Path() == "" {
		return nil, fmt.Errorf("%w: X.509-SVID for the trust domain ID %q (a leaf needs a path)", ErrInvalidParams, p.SPIFFEID)
	}
	if p.PublicKey == nil {
		return nil, fmt.Errorf("%w: no public key", ErrInvalidParams)
	}
	if _, err := x509.MarshalPKIXPublicKey(p.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: public key: %v", ErrInvalidParams, err)
	}
	if p.TTL < 0 {
		return nil, fmt.Errorf("%w: negative TTL", ErrInvalidParams)
	}
	for _, n := range p.DNSNames {
		if n == "" {
			return nil, fmt.Errorf("%w: empty DNS name", ErrInvalidParams)
		}
	}
	ttl := p.TTL
	if ttl == 0 {
		ttl = m.cfg.X509SVIDTTL
	}

	// Slot and time read together, as in SignJWTSVID.
	m.mu.RLock()
	ca := activeOf(m.x509[:])
	now := m.cfg.Clock()
	m.mu.RUnlock()
	if ca == nil {
		return nil, errors.New("ca: sign X.509-SVID: no active CA")
	}

	notBefore := now.Add(-backdate)
	if notBefore.Before(ca.cert.NotBefore) {
		notBefore = ca.cert.NotBefore
	}
	notAfter := now.Add(ttl)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("ca: sign X.509-SVID: active CA expired at %s", ca.cert.NotAfter)
	}
	subject := p.Subject
	if subject.String() == "" {
		subject = pkix.Name{Country: []string{"US"}, Organization: []string{"SPIRE"}}
	}
	if len(p.DNSNames) > 0 {
		subject.CommonName = p.DNSNames[0]
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("ca: sign X.509-SVID: %w", err)
	}
	ski, err := subjectKeyID(p.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("ca: sign X.509-SVID: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		URIs:                  []*url.URL{p.SPIFFEID.URL()},
		DNSNames:              p.DNSNames,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		SubjectKeyId:          ski,
		// AuthorityKeyId is taken from the CA's SubjectKeyId.
	}
	// A key manager that signs with the wrong key must not get a bad
	// certificate out of the door: createCertificate verifies every
	// signature but those of in-process software keys.
	leaf, err := createCertificate(rand.Reader, tmpl, ca.cert, p.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign X.509-SVID: %w", err)
	}
	out := make([]*x509.Certificate, 0, 1+len(ca.intermediates))
	out = append(out, leaf)
	return append(out, ca.intermediates...), nil
}

func (m *Manager) checkID(id spiffeid.ID) error {
	if id.IsZero() {
		return fmt.Errorf("%w: no SPIFFE ID", ErrInvalidParams)
	}
	if !id.MemberOf(m.cfg.TrustDomain) {
		return fmt.Errorf("%w: SPIFFE ID %q is not in trust domain %q", ErrInvalidParams, id, m.cfg.TrustDomain)
	}
	return nil
}

func (m *Manager) caTemplate(pub crypto.PublicKey, now time.Time) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	ski, err := subjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               m.cfg.CASubject,
		URIs:                  []*url.URL{m.cfg.TrustDomain.ID().URL()},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(m.cfg.CATTL),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          ski,
	}, nil
}

func (m *Manager) selfSignCA(key keymanager.Key, now time.Time) (*x509Slot, error) {
	tmpl, err := m.caTemplate(key.Public(), now)
	if err != nil {
		return nil, fmt.Errorf("ca: self-sign CA: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("ca: self-sign CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: self-sign CA: %w", err)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		return nil, fmt.Errorf("ca: self-sign CA: signature does not verify: %w", err)
	}
	return &x509Slot{
		slotMeta: slotMeta{notAfter: cert.NotAfter},
		cert:     cert,
		roots:    []*x509.Certificate{cert},
	}, nil
}

// upstreamSignCA has the upstream authority certify key, and checks the
// answer before trusting it: right key, a CA, and a chain to the roots.
func (m *Manager) upstreamSignCA(ctx context.Context, key keymanager.Key, now time.Time) (*x509Slot, error) {
	tmpl, err := m.caTemplate(key.Public(), now)
	if err != nil {
		return nil, fmt.Errorf("ca: upstream CA: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: tmpl.Subject,
		URIs:    tmpl.URIs,
	}, key)
	if err != nil {
		return nil, fmt.Errorf("ca: upstream CA: create CSR: %w", err)
	}
	chain, roots, err := m.cfg.Upstream.MintX509CA(ctx, csr, m.cfg.CATTL)
	if err != nil {
		return nil, fmt.Errorf("ca: upstream CA: mint: %w", err)
	}
	if len(chain) == 0 || len(roots) == 0 {
		return nil, errors.New("ca: upstream CA: upstream returned no certificate or no roots")
	}
	cert := chain[0]
	if !publicKeyEqual(key.Public(), cert.PublicKey) {
		return nil, errors.New("ca: upstream CA: certificate is not for the CA key")
	}
	if !cert.BasicConstraintsValid || !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("ca: upstream CA: certificate is not a signing CA")
	}
	if !cert.NotAfter.After(now) {
		return nil, errors.New("ca: upstream CA: certificate already expired")
	}
	rootPool, interPool := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	for _, c := range chain[1:] {
		interPool.AddCert(c)
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots: rootPool, Intermediates: interPool, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("ca: upstream CA: chain does not verify to the upstream roots: %w", err)
	}
	return &x509Slot{
		slotMeta:      slotMeta{notAfter: cert.NotAfter},
		cert:          cert,
		intermediates: append([]*x509.Certificate(nil), chain...),
		roots:         roots,
	}, nil
}

func randomSerial() (*big.Int, error) {
	// 128 random bits; zero is not a valid serial, so it is redrawn.
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
