package cache

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// X509SVID is an X.509-SVID as the cache holds it: the chain as DER, the
// key as PKCS#8 DER, and the leaf's SPIFFE ID and validity, which are all
// the agent decides on. Parsed certificates and keys were most of the heap
// of an agent holding 10,000 SVIDs (bench/RESULTS-agent-memory.md), and
// every reader but a few rare ones (taint, SVIDStores) wants the DER
// anyway: the Workload API, SDS and the delegated identity API send it as
// is, and the cache database stores it.
//
// An X509SVID never changes once made; the slices its methods return are
// shared with it and must not be modified.
type X509SVID struct {
	chain []byte // concatenated DER, leaf first
	key   []byte // PKCS#8
	// id is the leaf's SPIFFE ID, zero if it has none that parses (such an
	// SVID is never served and is replaced).
	id spiffeid.ID
	// Certificate times have whole seconds (RFC 5280 forbids fractions),
	// so Unix seconds hold them exactly in a third of a time.Time.
	notBefore, notAfter int64
	// akis is each certificate's AuthorityKeyId, leaf first (nil for one
	// without): what tells, without parsing the chain, whether a tainted
	// authority can have signed it.
	akis [][]byte
}

// NewX509SVID holds chain (leaf first) and key, which must be a key
// PKCS#8 can encode.
func NewX509SVID(chain []*x509.Certificate, key crypto.Signer) (*X509SVID, error) {
	if len(chain) == 0 {
		return nil, errors.New("cache: empty certificate chain")
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("cache: marshal SVID key: %w", err)
	}
	return newX509SVID(chain, der), nil
}

// ParseX509SVID holds an SVID read back as DER: each certificate of chain
// (leaf first) and the PKCS#8 key. Everything is parsed once, so that what
// would fail later is refused here, and only the DER is kept.
func ParseX509SVID(chain [][]byte, key []byte) (*X509SVID, error) {
	if len(chain) == 0 {
		return nil, errors.New("cache: empty certificate chain")
	}
	certs := make([]*x509.Certificate, 0, len(chain))
	for _, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("cache: SVID certificate: %w", err)
		}
		certs = append(certs, c)
	}
	s := newX509SVID(certs, bytes.Clone(key))
	if _, err := s.Signer(); err != nil {
		return nil, err
	}
	return s, nil
}

// newX509SVID holds certs (leaf first) as one run of DER, with key.
func newX509SVID(certs []*x509.Certificate, key []byte) *X509SVID {
	n := 0
	for _, c := range certs {
		n += len(c.Raw)
	}
	chain := make([]byte, 0, n)
	for _, c := range certs {
		chain = append(chain, c.Raw...)
	}
	leaf := certs[0]
	s := &X509SVID{chain: chain, key: key, notBefore: leaf.NotBefore.Unix(), notAfter: leaf.NotAfter.Unix()}
	if id, err := x509svid.IDFromCert(leaf); err == nil {
		s.id = id
	}
	s.akis = make([][]byte, len(certs))
	for i, c := range certs {
		if len(c.AuthorityKeyId) > 0 {
			s.akis[i] = bytes.Clone(c.AuthorityKeyId)
		}
	}
	return s
}

// AuthorityKeyIDs is each certificate's AuthorityKeyId, leaf first, nil
// for one without.
func (s *X509SVID) AuthorityKeyIDs() [][]byte { return s.akis }

// Chain is the certificate chain as concatenated DER, leaf first: the
// Workload API's form.
func (s *X509SVID) Chain() []byte { return s.chain }

// Certificates is the DER of each certificate of the chain, leaf first.
func (s *X509SVID) Certificates() [][]byte {
	var out [][]byte
	for rest := s.chain; len(rest) > 0; {
		var c []byte
		c, rest = splitCertificate(rest)
		out = append(out, c)
	}
	return out
}

// Leaf is the DER of the leaf certificate.
func (s *X509SVID) Leaf() []byte {
	leaf, _ := splitCertificate(s.chain)
	return leaf
}

// splitCertificate returns the first DER element of a chain and the rest.
// The chain was made of parsed certificates, so it always splits; were it
// not, the whole is returned rather than nothing.
func splitCertificate(chain []byte) (first, rest []byte) {
	in := cryptobyte.String(chain)
	var elem cryptobyte.String
	if !in.ReadASN1Element(&elem, cbasn1.SEQUENCE) {
		return chain, nil
	}
	return elem, in
}

// ParseCertificates parses the chain, for the few readers that need more
// than the DER and the facts held.
func (s *X509SVID) ParseCertificates() ([]*x509.Certificate, error) {
	return x509.ParseCertificates(s.chain)
}

// PrivateKey is the key as PKCS#8 DER.
func (s *X509SVID) PrivateKey() []byte { return s.key }

// Signer parses the key, for the readers that hand it on as a
// crypto.Signer.
func (s *X509SVID) Signer() (crypto.Signer, error) {
	k, err := x509.ParsePKCS8PrivateKey(s.key)
	if err != nil {
		return nil, fmt.Errorf("cache: SVID key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("cache: SVID key of type %T cannot sign", k)
	}
	return signer, nil
}

// ID is the leaf's SPIFFE ID; zero when it has none.
func (s *X509SVID) ID() spiffeid.ID { return s.id }

// NotBefore is when the leaf becomes valid.
func (s *X509SVID) NotBefore() time.Time { return time.Unix(s.notBefore, 0).UTC() }

// NotAfter is when the leaf expires.
func (s *X509SVID) NotAfter() time.Time { return time.Unix(s.notAfter, 0).UTC() }
