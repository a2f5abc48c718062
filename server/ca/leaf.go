package ca

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // RFC 5280 key identifier method, not a security use
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/spiffe-hw/spire-hw/server/keymanager"
)

// An X.509-SVID is built here directly in DER instead of through
// x509.CreateCertificate: the reflective encoder, the signer round trip and
// the re-parse of the result cost more than the ECDSA signature itself. The
// encoding is the one CreateCertificate produces for the same template,
// byte for byte (TestLeafTBSMatchesCreateCertificate and FuzzLeafTBS hold
// it to that), so relying parties see no difference.

// InProcessKey is implemented by keys whose signatures are computed by Go's
// own crypto in this process (the memory and disk key managers). The CA
// does not verify what they sign: a second check of the standard library's
// own signature costs more than the signature itself and catches nothing a
// hardware or remote signer could get wrong. Every other key's signatures
// are verified once before a certificate leaves.
type InProcessKey interface {
	InProcess() bool
}

// leafSigAlg is a signature algorithm a CA key signs leaves with.
type leafSigAlg struct {
	der  []byte // AlgorithmIdentifier
	alg  x509.SignatureAlgorithm
	hash crypto.Hash
}

var (
	sigECDSASHA256 = leafSigAlg{mustDER(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidECDSASHA256) })
	}), x509.ECDSAWithSHA256, crypto.SHA256}
	sigECDSASHA384 = leafSigAlg{mustDER(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidECDSASHA384) })
	}), x509.ECDSAWithSHA384, crypto.SHA384}
	sigRSASHA256 = leafSigAlg{mustDER(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidRSASHA256)
			b.AddASN1NULL()
		})
	}), x509.SHA256WithRSA, crypto.SHA256}
)

var (
	oidECDSASHA256 = []int{1, 2, 840, 10045, 4, 3, 2}
	oidECDSASHA384 = []int{1, 2, 840, 10045, 4, 3, 3}
	oidRSASHA256   = []int{1, 2, 840, 113549, 1, 1, 11}

	oidKeyUsage         = []int{2, 5, 29, 15}
	oidExtKeyUsage      = []int{2, 5, 29, 37}
	oidBasicConstraints = []int{2, 5, 29, 19}
	oidSubjectKeyID     = []int{2, 5, 29, 14}
	oidAuthorityKeyID   = []int{2, 5, 29, 35}
	oidSubjectAltName   = []int{2, 5, 29, 17}
	oidServerAuth       = []int{1, 3, 6, 1, 5, 5, 7, 3, 1}
	oidClientAuth       = []int{1, 3, 6, 1, 5, 5, 7, 3, 2}
)

// The extensions every X.509-SVID carries unchanged, encoded once.
var (
	// digitalSignature | keyEncipherment | keyAgreement: bits 0, 2 and 4,
	// five bits long, so three unused bits in the last octet.
	extKeyUsageDER = mustDER(func(b *cryptobyte.Builder) {
		addExtension(b, oidKeyUsage, true, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.BIT_STRING, func(b *cryptobyte.Builder) { b.AddBytes([]byte{3, 0xa8}) })
		})
	})
	extExtKeyUsageDER = mustDER(func(b *cryptobyte.Builder) {
		addExtension(b, oidExtKeyUsage, false, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(oidServerAuth)
				b.AddASN1ObjectIdentifier(oidClientAuth)
			})
		})
	})
	// cA FALSE is the default and so absent: an empty sequence.
	extBasicConstraintsDER = mustDER(func(b *cryptobyte.Builder) {
		addExtension(b, oidBasicConstraints, true, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {})
		})
	})
	emptyName = []byte{0x30, 0}
)

func mustDER(f cryptobyte.BuilderContinuation) []byte {
	var b cryptobyte.Builder
	f(&b)
	return b.BytesOrPanic()
}

// addExtension appends an Extension; critical FALSE is the default and so
// left out, as DER requires.
func addExtension(b *cryptobyte.Builder, oid []int, critical bool, value cryptobyte.BuilderContinuation) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if critical {
			b.AddASN1Boolean(true)
		}
		b.AddASN1(cbasn1.OCTET_STRING, value)
	})
}

// leafSigAlgs are the algorithms CreateCertificate picks by default for
// the key types the key managers offer.
var leafSigAlgs = map[keymanager.KeyType]leafSigAlg{
	keymanager.ECP256:  sigECDSASHA256,
	keymanager.ECP384:  sigECDSASHA384,
	keymanager.RSA2048: sigRSASHA256,
	keymanager.RSA4096: sigRSASHA256,
}

// leafTemplate is what differs between two X.509-SVIDs, in encoded form.
type leafTemplate struct {
	serial              *big.Int
	sigAlg              leafSigAlg
	issuer              []byte // DER Name, the CA's subject
	notBefore, notAfter time.Time
	subject             []byte // DER Name
	spki                []byte // DER SubjectPublicKeyInfo
	ski, aki            []byte
	uri                 string
	dnsNames            []string
}

// tbs encodes the TBSCertificate: version 3, then the fields in RFC 5280
// order, with the extensions in the order CreateCertificate writes them.
func (t *leafTemplate) tbs() ([]byte, error) {
	for _, s := range append([]string{t.uri}, t.dnsNames...) {
		if !isIA5(s) {
			return nil, fmt.Errorf("%w: SAN %q is not ASCII", ErrInvalidParams, s)
		}
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, 640))
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddASN1Int64(2) })
		b.AddASN1BigInt(t.serial)
		b.AddBytes(t.sigAlg.der)
		b.AddBytes(t.issuer)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addTime(b, t.notBefore)
			addTime(b, t.notAfter)
		})
		b.AddBytes(t.subject)
		b.AddBytes(t.spki)
		b.AddASN1(cbasn1.Tag(3).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddBytes(extKeyUsageDER)
				b.AddBytes(extExtKeyUsageDER)
				b.AddBytes(extBasicConstraintsDER)
				addExtension(b, oidSubjectKeyID, false, func(b *cryptobyte.Builder) {
					b.AddASN1OctetString(t.ski)
				})
				// As CreateCertificate: no authority key ID on a leaf
				// whose subject repeats its issuer's.
				if len(t.aki) > 0 && !bytes.Equal(t.subject, t.issuer) {
					addExtension(b, oidAuthorityKeyID, false, func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(t.aki) })
						})
					})
				}
				// RFC 5280 4.2.1.6: with an empty subject the SAN carries
				// the identity and must be critical.
				addExtension(b, oidSubjectAltName, bytes.Equal(t.subject, emptyName), func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						for _, n := range t.dnsNames {
							b.AddASN1(cbasn1.Tag(2).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(n)) })
						}
						b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(t.uri)) })
					})
				})
			})
		})
	})
	return b.Bytes()
}

// addTime encodes a validity bound as encoding/asn1 does: UTCTime for the
// years 1950 to 2049, GeneralizedTime outside them, whole seconds, UTC.
func addTime(b *cryptobyte.Builder, t time.Time) {
	t = t.UTC().Truncate(time.Second)
	if y := t.Year(); y >= 1950 && y < 2050 {
		b.AddASN1UTCTime(t)
		return
	}
	b.AddASN1GeneralizedTime(t)
}

func isIA5(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// signLeaf signs a TBSCertificate with the CA key and wraps it into a
// Certificate. Keys that do not compute their signatures with Go's own
// crypto in this process have the signature checked against the CA
// certificate, so a wrong key or a faulty HSM never gets a bad certificate
// out of the door.
func signLeaf(tbs []byte, alg leafSigAlg, key crypto.Signer, parent *x509.Certificate) ([]byte, error) {
	h := alg.hash.New()
	h.Write(tbs)
	sig, err := key.Sign(rand.Reader, h.Sum(nil), alg.hash)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	if ip, ok := key.(InProcessKey); !ok || !ip.InProcess() {
		if err := parent.CheckSignature(alg.alg, tbs, sig); err != nil {
			return nil, fmt.Errorf("signature does not verify against the CA: %w", err)
		}
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, len(tbs)+len(alg.der)+len(sig)+16))
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddBytes(alg.der)
		b.AddASN1BitString(sig)
	})
	return b.Bytes()
}

// spkiKeyID returns the DER SubjectPublicKeyInfo of pub and its RFC 5280
// method 1 key identifier: SHA-1 over the subjectPublicKey bits.
func spkiKeyID(pub crypto.PublicKey) (spki, id []byte, err error) {
	spki, err = x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("public key: %w", err)
	}
	in := cryptobyte.String(spki)
	var body cryptobyte.String
	var bits []byte
	if !in.ReadASN1(&body, cbasn1.SEQUENCE) || !body.SkipASN1(cbasn1.SEQUENCE) || !body.ReadASN1BitStringAsBytes(&bits) {
		return nil, nil, errors.New("public key: malformed SubjectPublicKeyInfo")
	}
	sum := sha1.Sum(bits) //nolint:gosec // see import
	return spki, sum[:], nil
}
