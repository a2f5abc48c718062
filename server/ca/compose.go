package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-hw/spire-hw/server/credentialcomposer"
)

// Credential composition follows SPIRE v1.13.3 (pkg/server/credtemplate
// and credvalidator): each composer in Config.Composers gets the
// attributes the CA would use and the previous composer's output, the
// credential is built from the result, and what comes out is checked
// against the SPIFFE rules before it leaves. Only the attributes a composer
// may change cross over; serial, validity, key, SPIFFE ID, key usages and
// basic constraints stay the CA's, and the checks catch an extra extension
// that tries to replace them.

// SVIDKind says whom an X.509-SVID is for, which decides the composer
// method that composes it.
type SVIDKind int

const (
	// KindAuto derives the kind from the SPIFFE ID: the server's own ID
	// (/spire/server) is the server, /spire/agent/... an agent, anything
	// else a workload. Workload entries cannot take IDs under /spire, so
	// the derivation only errs for an admin minting such an ID.
	KindAuto SVIDKind = iota
	// KindWorkload is a workload's X.509-SVID (BatchNewX509SVID, Mint).
	KindWorkload
	// KindAgent is an agent's X.509-SVID (AttestAgent, RenewAgent).
	KindAgent
	// KindServer is the server's own X.509-SVID.
	KindServer
)

// String names the kind as SPIRE's error messages do.
func (k SVIDKind) String() string {
	switch k {
	case KindAuto:
		return "auto"
	case KindWorkload:
		return "workload"
	case KindAgent:
		return "agent"
	case KindServer:
		return "server"
	}
	return fmt.Sprintf("SVIDKind(%d)", int(k))
}

// kindOf resolves KindAuto.
func kindOf(p X509SVIDParams) (SVIDKind, error) {
	switch p.Kind {
	case KindWorkload, KindAgent, KindServer:
		return p.Kind, nil
	case KindAuto:
		switch path := p.SPIFFEID.Path(); {
		case path == "/spire/server":
			return KindServer, nil
		case strings.HasPrefix(path, "/spire/agent/"):
			return KindAgent, nil
		}
		return KindWorkload, nil
	}
	return 0, fmt.Errorf("%w: unknown SVID kind %d", ErrInvalidParams, int(p.Kind))
}

// composeCA has the composers amend a CA certificate template.
func (m *Manager) composeCA(ctx context.Context, tmpl *x509.Certificate) error {
	for _, c := range m.cfg.Composers {
		attrs, err := c.ComposeServerX509CA(ctx, credentialcomposer.X509CAAttributes{
			Subject:         tmpl.Subject,
			Policies:        tmpl.Policies,
			ExtraExtensions: tmpl.ExtraExtensions,
		})
		if err != nil {
			return err
		}
		tmpl.Subject, tmpl.Policies, tmpl.ExtraExtensions = attrs.Subject, attrs.Policies, attrs.ExtraExtensions
	}
	return nil
}

// issueComposedX509SVID is IssueX509SVID with composers: the template the
// direct encoder would write, amended, signed by x509.CreateCertificate
// (which also checks the signature) and then checked as SPIRE checks it.
func (m *Manager) issueComposedX509SVID(ctx context.Context, p X509SVIDParams, ca *x509Slot, now, notBefore, notAfter time.Time, ski []byte) (*X509SVID, error) {
	kind, err := kindOf(p)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("ca: sign X.509-SVID: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      leafSubjectName(p),
		URIs:         []*url.URL{p.SPIFFEID.URL()},
		// Clipped, so that a composer in this process that appends to
		// the names cannot write into the caller's array.
		DNSNames:              slices.Clip(p.DNSNames),
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		SubjectKeyId:          ski,
	}
	for _, c := range m.cfg.Composers {
		in := credentialcomposer.X509SVIDAttributes{Subject: tmpl.Subject, DNSNames: tmpl.DNSNames, ExtraExtensions: tmpl.ExtraExtensions}
		var out credentialcomposer.X509SVIDAttributes
		switch kind {
		case KindServer:
			out, err = c.ComposeServerX509SVID(ctx, in)
		case KindAgent:
			out, err = c.ComposeAgentX509SVID(ctx, p.SPIFFEID, p.PublicKey, in)
		default:
			out, err = c.ComposeWorkloadX509SVID(ctx, p.SPIFFEID, p.PublicKey, in)
		}
		if err != nil {
			return nil, fmt.Errorf("ca: sign X.509-SVID: %w", err)
		}
		tmpl.Subject, tmpl.DNSNames, tmpl.ExtraExtensions = out.Subject, out.DNSNames, out.ExtraExtensions
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, p.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign X.509-SVID: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: sign X.509-SVID: composed certificate does not parse: %w", err)
	}
	if err := validateX509SVID(cert, p.SPIFFEID, now); err != nil {
		return nil, fmt.Errorf("ca: sign X.509-SVID: invalid %s X509-SVID: %w", kind, err)
	}
	chain := make([][]byte, 0, 1+len(ca.intermediates))
	chain = append(chain, der)
	for _, c := range ca.intermediates {
		chain = append(chain, c.Raw)
	}
	return &X509SVID{
		Chain:         chain,
		Serial:        serial,
		NotAfter:      cert.NotAfter,
		intermediates: ca.intermediates,
	}, nil
}

// signComposedJWTSVID is SignJWTSVID with composers. The claims start as
// SPIRE's (aud always a list), go through the composers, and must come out
// naming the same subject with an audience and a live expiry.
func (m *Manager) signComposedJWTSVID(ctx context.Context, p JWTSVIDParams, alg jwsAlgorithm, slot *jwtSlot, now, exp time.Time) (string, error) {
	claims := map[string]any{
		"sub": p.SPIFFEID.String(),
		"aud": slices.Clone(p.Audience),
		"exp": exp.Unix(),
		"iat": now.Unix(),
	}
	if m.cfg.JWTIssuer != "" {
		claims["iss"] = m.cfg.JWTIssuer
	}
	for _, c := range m.cfg.Composers {
		var err error
		if claims, err = c.ComposeWorkloadJWTSVID(ctx, p.SPIFFEID, claims); err != nil {
			return "", fmt.Errorf("ca: sign JWT-SVID: %w", err)
		}
	}
	// Claims that crossed a protobuf Struct hold numbers as float64, which
	// JSON would write in exponent form past 1e21 and some verifiers (AWS)
	// refuse even below; SPIRE writes the timestamps back as integers.
	for _, k := range []string{"iat", "exp"} {
		if f, ok := claims[k].(float64); ok {
			claims[k] = int64(f)
		}
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("ca: sign JWT-SVID: encode composed claims: %w", err)
	}
	if err := validateJWTClaims(payload, p.SPIFFEID, now); err != nil {
		return "", fmt.Errorf("ca: sign JWT-SVID: %w", err)
	}
	token, err := signJWS(alg, slot.kid, slot.key, slot.pub, payload)
	if err != nil {
		return "", fmt.Errorf("ca: sign JWT-SVID: %w", err)
	}
	return token, nil
}

// The checks below are SPIRE's credvalidator, with its messages, so that
// operators who know SPIRE's refusals recognise ours.

// validateX509CA checks a composed CA certificate.
func validateX509CA(cert *x509.Certificate, caID spiffeid.ID, now time.Time) error {
	switch {
	case !cert.BasicConstraintsValid:
		return errors.New("invalid X509 CA: basic constraints are not valid")
	case !cert.IsCA:
		return errors.New("invalid X509 CA: cA constraint is not set")
	case cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return errors.New("invalid X509 CA: keyCertSign key usage must be set")
	case cert.KeyUsage&^(x509.KeyUsageCertSign|x509.KeyUsageCRLSign|x509.KeyUsageDigitalSignature) != 0:
		return errors.New("invalid X509 CA: only keyCertSign, cRLSign, or digitalSignature key usage can be set")
	}
	if err := checkURISAN(cert, true, caID); err != nil {
		return fmt.Errorf("invalid X509 CA: %w", err)
	}
	if err := checkValidity(cert, now); err != nil {
		return fmt.Errorf("invalid X509 CA: %w", err)
	}
	return nil
}

// validateX509SVID checks a composed X.509-SVID for id.
func validateX509SVID(cert *x509.Certificate, id spiffeid.ID, now time.Time) error {
	switch {
	case !cert.BasicConstraintsValid:
		return errors.New("invalid X509-SVID: basic constraints are not valid")
	case cert.IsCA:
		return errors.New("invalid X509-SVID: cA constraint must not be set")
	case cert.KeyUsage&x509.KeyUsageDigitalSignature == 0:
		return errors.New("invalid X509-SVID: digitalSignature key usage must be set")
	case cert.KeyUsage&^(x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment|x509.KeyUsageKeyAgreement) != 0:
		return errors.New("invalid X509-SVID: only digitalSignature, keyEncipherment, and keyAgreement key usage can be set")
	}
	if len(cert.ExtKeyUsage) > 0 {
		server := slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		client := slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
		switch {
		case !server && client:
			return errors.New("invalid X509-SVID: missing serverAuth extended key usage")
		case server && !client:
			return errors.New("invalid X509-SVID: missing clientAuth extended key usage")
		case !server && !client:
			return errors.New("invalid X509-SVID: missing both serverAuth and clientAuth extended key usage")
		}
	}
	if err := checkURISAN(cert, false, id); err != nil {
		return fmt.Errorf("invalid X509-SVID: %w", err)
	}
	if err := checkValidity(cert, now); err != nil {
		return fmt.Errorf("invalid X509-SVID: %w", err)
	}
	return nil
}

// checkURISAN: exactly one URI SAN, the expected ID; a CA may have none.
func checkURISAN(cert *x509.Certificate, isCA bool, id spiffeid.ID) error {
	switch {
	case len(cert.URIs) == 0 && isCA:
		return nil
	case len(cert.URIs) == 0:
		return errors.New("missing URI SAN")
	case len(cert.URIs) > 1:
		return fmt.Errorf("expected URI SAN %q but got %q", id, cert.URIs)
	case cert.URIs[0].String() != id.String():
		return fmt.Errorf("expected URI SAN %q but got %q", id, cert.URIs[0])
	}
	return nil
}

func checkValidity(cert *x509.Certificate, now time.Time) error {
	if !cert.NotBefore.IsZero() && now.Before(cert.NotBefore) {
		return fmt.Errorf("not yet valid until %s", cert.NotBefore.Format(time.RFC3339))
	}
	if !cert.NotAfter.IsZero() && now.After(cert.NotAfter) {
		return fmt.Errorf("already expired as of %s", cert.NotAfter.Format(time.RFC3339))
	}
	return nil
}

// validateJWTClaims checks composed claims, read as go-jose reads them
// from the token SPIRE validates.
func validateJWTClaims(payload []byte, id spiffeid.ID, now time.Time) error {
	var c jwt.Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return fmt.Errorf("failed to extract JWT-SVID claims for validation: %w", err)
	}
	switch {
	case c.Subject != id.String():
		return fmt.Errorf(`invalid JWT-SVID "sub" claim: expected %q but got %q`, id, c.Subject)
	case c.Expiry == nil:
		return errors.New(`invalid JWT-SVID "exp" claim: required but missing`)
	case !c.Expiry.Time().After(now):
		return fmt.Errorf(`invalid JWT-SVID "exp" claim: already expired as of %s`, c.Expiry.Time().Format(time.RFC3339))
	case c.NotBefore != nil && c.NotBefore.Time().After(now):
		return fmt.Errorf(`invalid JWT-SVID "nbf" claim: not yet valid until %s`, c.NotBefore.Time().Format(time.RFC3339))
	case len(c.Audience) == 0:
		return errors.New(`invalid JWT-SVID "aud" claim: required but missing`)
	case slices.Contains(c.Audience, ""):
		return errors.New(`invalid JWT-SVID "aud" claim: contains empty value`)
	}
	return nil
}
