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
// tainted authority or a certificate one signed. The key IDs are compared
// first so that the signature is checked only for a likely match: every
// SVID is checked on every sync while an authority stays tainted.
func (t *taintSet) chainTainted(chain []*x509.Certificate) bool {
	if t == nil {
		return false
	}
	for _, c := range chain {
		for _, a := range t.x509 {
			if c.Equal(a) {
				return true
			}
			if len(c.AuthorityKeyId) > 0 && !bytes.Equal(c.AuthorityKeyId, a.SubjectKeyId) {
				continue
			}
			if c.CheckSignatureFrom(a) == nil {
				return true
			}
		}
	}
	return false
}

// svidTainted is chainTainted for an SVID the cache holds as DER. It
// parses the chain only while some authority is tainted and the chain is
// not one itself: every SVID is checked on every sync then, but rarely,
// and the cache is kept free of parsed certificates the rest of the time.
func (t *taintSet) svidTainted(s *cache.X509SVID) bool {
	if t == nil || len(t.x509) == 0 || s == nil {
		return false
	}
	for _, der := range s.Certificates() {
		for _, a := range t.x509 {
			if bytes.Equal(der, a.Raw) {
				return true
			}
		}
	}
	chain, err := s.ParseCertificates()
	if err != nil {
		return false // the cache parsed it once already
	}
	return t.chainTainted(chain)
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
