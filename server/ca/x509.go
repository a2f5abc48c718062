package ca

import (
	"context"
	"crypto"
	"crypto/rand"
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
	// Kind says which credential composer method composes the SVID; the
	// zero value derives it from the SPIFFE ID.
	Kind SVIDKind
}

// X509SVID is a signed X.509-SVID in DER, with the facts the server's API
// needs from it, so the issuance path never parses what it has just built.
type X509SVID struct {
	// Chain is the leaf followed by the intermediates a relying party needs
	// to reach the bundle (none for a self-signed CA; the CA and upstream
	// intermediates otherwise). The root is never included.
	Chain    [][]byte
	Serial   *big.Int
	NotAfter time.Time

	intermediates []*x509.Certificate
}

// SignX509SVID is IssueX509SVID for callers that want the certificates
// parsed: the leaf followed by the intermediates.
func (m *Manager) SignX509SVID(ctx context.Context, p X509SVIDParams) ([]*x509.Certificate, error) {
	svid, err := m.IssueX509SVID(ctx, p)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(svid.Chain[0])
	if err != nil {
		return nil, fmt.Errorf("ca: sign X.509-SVID: %w", err)
	}
	return append([]*x509.Certificate{leaf}, svid.intermediates...), nil
}

// IssueX509SVID signs an X.509-SVID with the active CA.
func (m *Manager) IssueX509SVID(ctx context.Context, p X509SVIDParams) (_ *X509SVID, err error) {
	defer func() {
		if err == nil {
			m.signed("x509_svid")
		}
	}()
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
	spki, ski, err := spkiKeyID(p.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidParams, err)
	}

	// The slot and the time are read together under the lock: read apart,
	// a rotation and a clock step between them could pair a replaced slot
	// with a time past its expiry and refuse to sign on a healthy CA.
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
	if len(m.cfg.Composers) > 0 {
		// Composed attributes (any subject, extra extensions) are beyond
		// the direct encoder below, which stays the path of every server
		// without composers.
		return m.issueComposedX509SVID(ctx, p, ca, now, notBefore, notAfter, ski)
	}
	sigAlg, ok := leafSigAlgs[ca.key.Type()]
	if !ok {
		return nil, fmt.Errorf("ca: sign X.509-SVID: no signature algorithm for CA key type %s", ca.key.Type())
	}
	subject, err := leafSubject(p)
	if err != nil {
		return nil, fmt.Errorf("%w: subject: %v", ErrInvalidParams, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("ca: sign X.509-SVID: %w", err)
	}
	t := leafTemplate{
		serial:    serial,
		sigAlg:    sigAlg,
		issuer:    ca.cert.RawSubject,
		notBefore: notBefore,
		notAfter:  notAfter,
		subject:   subject,
		spki:      spki,
		ski:       ski,
		aki:       ca.cert.SubjectKeyId,
		uri:       p.SPIFFEID.String(),
		dnsNames:  p.DNSNames,
	}
	tbs, err := t.tbs()
	if err != nil {
		return nil, fmt.Errorf("ca: sign X.509-SVID: %w", err)
	}
	leaf, err := signLeaf(tbs, sigAlg, ca.key, ca.cert)
	if err != nil {
		return nil, fmt.Errorf("ca: sign X.509-SVID: %w", err)
	}
	chain := make([][]byte, 0, 1+len(ca.intermediates))
	chain = append(chain, leaf)
	for _, c := range ca.intermediates {
		chain = append(chain, c.Raw)
	}
	return &X509SVID{
		Chain:         chain,
		Serial:        serial,
		NotAfter:      notAfter.UTC().Truncate(time.Second),
		intermediates: ca.intermediates,
	}, nil
}

// defaultSubject is what SPIRE puts in an X.509-SVID's subject.
var defaultSubject = pkix.Name{Country: []string{"US"}, Organization: []string{"SPIRE"}}

var defaultSubjectDER = func() []byte {
	der, err := asn1.Marshal(defaultSubject.ToRDNSequence())
	if err != nil {
		panic(err)
	}
	return der
}()

// leafSubject encodes the subject: the caller's, else SPIRE's default, with
// the first DNS name as its common name.
func leafSubject(p X509SVIDParams) ([]byte, error) {
	if len(p.DNSNames) == 0 && p.Subject.String() == "" {
		return defaultSubjectDER, nil
	}
	return asn1.Marshal(leafSubjectName(p).ToRDNSequence())
}

// leafSubjectName is the subject leafSubject encodes.
func leafSubjectName(p X509SVIDParams) pkix.Name {
	subject := p.Subject
	if subject.String() == "" {
		subject = defaultSubject
	}
	if len(p.DNSNames) > 0 {
		subject.CommonName = p.DNSNames[0]
	}
	return subject
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

func (m *Manager) selfSignCA(ctx context.Context, key keymanager.Key, now time.Time) (*x509Slot, error) {
	tmpl, err := m.caTemplate(key.Public(), now)
	if err != nil {
		return nil, fmt.Errorf("ca: self-sign CA: %w", err)
	}
	if err := m.composeCA(ctx, tmpl); err != nil {
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
	if len(m.cfg.Composers) > 0 {
		// Before the signature check, which would also fail on a composed
		// non-CA but without saying what the composer broke.
		if err := validateX509CA(cert, m.cfg.TrustDomain.ID(), now); err != nil {
			return nil, fmt.Errorf("ca: self-sign CA: %w", err)
		}
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
	// As in SPIRE, composed policy identifiers are left to the upstream:
	// a CSR has no field for them.
	if err := m.composeCA(ctx, tmpl); err != nil {
		return nil, fmt.Errorf("ca: upstream CA: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:         tmpl.Subject,
		URIs:            tmpl.URIs,
		ExtraExtensions: tmpl.ExtraExtensions,
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
	_, id, err := spkiKeyID(pub)
	if err != nil {
		return nil, fmt.Errorf("subject key id: %w", err)
	}
	return id, nil
}
