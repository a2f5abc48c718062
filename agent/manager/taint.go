package manager

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// taintSet is what the trust domain's bundle marks as tainted: X.509
// authorities and JWT key IDs an operator has declared compromised
// (localauthority/v1 taint). Everything that chains to one is replaced at
// once rather than at half-life, as SPIRE's agent does, while the server
// still trusts it; once revoked, it leaves the bundle and anything left
// would no longer verify.
type taintSet struct {
	x509 []*x509.Certificate
	jwt  map[string]bool
}

// taintedIn reads the tainted authorities from a bundle as received; a
// certificate that does not parse is skipped (the bundle parser has
// already refused such a bundle).
func taintedIn(b *types.Bundle) *taintSet {
	t := &taintSet{jwt: map[string]bool{}}
	for _, a := range b.GetX509Authorities() {
		if !a.GetTainted() {
			continue
		}
		if c, err := x509.ParseCertificate(a.GetAsn1()); err == nil {
			t.x509 = append(t.x509, c)
		}
	}
	for _, k := range b.GetJwtAuthorities() {
		if k.GetTainted() {
			t.jwt[k.GetKeyId()] = true
		}
	}
	return t
}

func (t *taintSet) empty() bool { return t == nil || len(t.x509) == 0 && len(t.jwt) == 0 }

// chainTainted reports whether a certificate chain (leaf first) contains a
// tainted authority or a certificate one signed.
func (t *taintSet) chainTainted(chain []*x509.Certificate) bool {
	if t == nil {
		return false
	}
	for _, c := range chain {
		if t.certTainted(c.Raw, c.AuthorityKeyId, func() (*x509.Certificate, error) { return c, nil }) {
			return true
		}
	}
	return false
}

// svidTainted is chainTainted for an SVID the cache holds as DER. Every
// SVID is checked on every sync while an authority stays tainted, so a
// certificate is parsed only when its AuthorityKeyId (held with it) names
// a tainted authority, or it has none.
func (t *taintSet) svidTainted(s *cache.X509SVID) bool {
	if t == nil || len(t.x509) == 0 || s == nil {
		return false
	}
	akis := s.AuthorityKeyIDs()
	for i, der := range s.Certificates() {
		var aki []byte
		if i < len(akis) {
			aki = akis[i]
		}
		if t.certTainted(der, aki, func() (*x509.Certificate, error) { return x509.ParseCertificate(der) }) {
			return true
		}
	}
	return false
}

// certTainted reports whether the certificate raw, with AuthorityKeyId
// aki, is a tainted authority or signed by one. The key IDs are compared
// first so that the certificate is parsed (cert) and its signature
// checked only for a likely match.
func (t *taintSet) certTainted(raw, aki []byte, cert func() (*x509.Certificate, error)) bool {
	for _, a := range t.x509 {
		if bytes.Equal(raw, a.Raw) {
			return true
		}
		if len(aki) > 0 && !bytes.Equal(aki, a.SubjectKeyId) {
			continue
		}
		if c, err := cert(); err == nil && c.CheckSignatureFrom(a) == nil {
			return true
		}
	}
	return false
}

// jwtTainted reports whether a JWT-SVID was signed by a tainted key.
func (t *taintSet) jwtTainted(token string) bool {
	if t == nil || len(t.jwt) == 0 {
		return false
	}
	kid, err := jwtKeyID(token)
	return err == nil && t.jwt[kid]
}

// jwtKeyID returns the kid of a compact JWS. The token came from the
// server, which signed it; only its header is read here.
func jwtKeyID(token string) (string, error) {
	head, _, ok := strings.Cut(token, ".")
	if !ok {
		return "", fmt.Errorf("manager: JWT-SVID is not a compact JWS")
	}
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return "", fmt.Errorf("manager: JWT-SVID header: %w", err)
	}
	var h struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return "", fmt.Errorf("manager: JWT-SVID header: %w", err)
	}
	return h.Kid, nil
}

// tainted returns what the trust domain's bundle, as last received, marks
// as tainted.
func (m *Manager) tainted() *taintSet {
	m.mu.Lock()
	b := m.bundles[m.cfg.TrustDomain.Name()]
	m.mu.Unlock()
	return taintedIn(b)
}
