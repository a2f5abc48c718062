package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
)

// The verifier decodes the few TPM structures it checks on every
// attestation (an AK's TPMT_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE,
// TPMS_CREATION_DATA) by hand: go-tpm's reflection-driven decoder cost
// more than a quarter of the server's time per attestation. Each decoder
// reads big-endian TPM wire format, bounds every length by the input, and
// refuses trailing bytes, so a structure has exactly one encoding.

// TPM algorithm and structure tags the decoders know.
const (
	algRSA    = 0x0001
	algSHA256 = 0x000b
	algSHA384 = 0x000c
	algSHA512 = 0x000d
	algNull   = 0x0010
	algRSASSA = 0x0014
	algECDSA  = 0x0018
	algECC    = 0x0023

	stAttestCertify  = 0x8017
	stAttestQuote    = 0x8018
	stAttestCreation = 0x801a

	tpmGenerated = 0xff544347

	curveP256 = 0x0003
	curveP384 = 0x0004
	curveP521 = 0x0005
)

var errShort = errors.New("truncated structure")

// reader decodes TPM wire format; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = errShort
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() uint8 {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if b := r.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// sized reads a TPM2B: a 16-bit length and that many bytes.
func (r *reader) sized() []byte { return r.take(int(r.u16())) }

// done reports the first error, or trailing bytes.
func (r *reader) done() error {
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%d trailing bytes", len(r.b))
	}
	return nil
}

func hashOf(alg uint16) (crypto.Hash, error) {
	switch alg {
	case algSHA256:
		return crypto.SHA256, nil
	case algSHA384:
		return crypto.SHA384, nil
	case algSHA512:
		return crypto.SHA512, nil
	default:
		return 0, fmt.Errorf("hash algorithm %#x not allowed", alg)
	}
}

// TPMA_OBJECT bits the AK checks look at.
const (
	attrFixedTPM            = 1 << 1
	attrFixedParent         = 1 << 4
	attrSensitiveDataOrigin = 1 << 5
	attrRestricted          = 1 << 16
	attrDecrypt             = 1 << 17
	attrSignEncrypt         = 1 << 18
)

// signingPublic is a decoded TPMT_PUBLIC of a signing key.
type signingPublic struct {
	nameAlg uint16
	attrs   uint32
	// sigHash is the hash of the key's signing scheme.
	sigHash crypto.Hash
	key     crypto.PublicKey
}

// parseSigningPublic decodes the TPMT_PUBLIC of an ECDSA or RSASSA
// signing key with no symmetric algorithm, the only shapes an AK has.
func parseSigningPublic(b []byte) (*signingPublic, error) {
	r := &reader{b: b}
	typ := r.u16()
	p := &signingPublic{nameAlg: r.u16(), attrs: r.u32()}
	r.sized() // authPolicy
	if sym := r.u16(); r.err == nil && sym != algNull {
		return nil, fmt.Errorf("signing key with symmetric algorithm %#x", sym)
	}
	scheme, schemeHash := r.u16(), uint16(0)
	if scheme != algNull {
		schemeHash = r.u16()
	}
	switch typ {
	case algECC:
		curve, kdf := r.u16(), r.u16()
		if r.err == nil && kdf != algNull {
			return nil, fmt.Errorf("signing key with KDF %#x", kdf)
		}
		x, y := r.sized(), r.sized()
		if err := r.done(); err != nil {
			return nil, err
		}
		if scheme != algECDSA {
			return nil, fmt.Errorf("ECC key scheme %#x is not ECDSA", scheme)
		}
		k, err := eccKey(curve, x, y)
		if err != nil {
			return nil, err
		}
		p.key = k
	case algRSA:
		bits, exp := r.u16(), r.u32()
		n := r.sized()
		if err := r.done(); err != nil {
			return nil, err
		}
		if scheme != algRSASSA {
			return nil, fmt.Errorf("RSA key scheme %#x is not RSASSA", scheme)
		}
		if exp == 0 {
			exp = 65537
		}
		if int(bits) != 8*len(n) || bits < 2048 || bits > 4096 || exp > 1<<31-1 || exp < 3 || exp%2 == 0 {
			return nil, fmt.Errorf("unsupported RSA key (%d bits, modulus of %d bytes, exponent %d)", bits, len(n), exp)
		}
		p.key = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(exp)}
	default:
		if r.err != nil {
			return nil, r.err
		}
		return nil, fmt.Errorf("unsupported key type %#x", typ)
	}
	h, err := hashOf(schemeHash)
	if err != nil {
		return nil, err
	}
	p.sigHash = h
	return p, nil
}

// eccKey builds an ECDSA key from TPM coordinates, checking the point is
// on the curve.
func eccKey(curve uint16, x, y []byte) (*ecdsa.PublicKey, error) {
	var c elliptic.Curve
	switch curve {
	case curveP256:
		c = elliptic.P256()
	case curveP384:
		c = elliptic.P384()
	case curveP521:
		c = elliptic.P521()
	default:
		return nil, fmt.Errorf("unsupported curve %#x", curve)
	}
	size := (c.Params().BitSize + 7) / 8
	if len(x) > size || len(y) > size {
		return nil, errors.New("ECC point coordinates too long")
	}
	pt := make([]byte, 1+2*size)
	pt[0] = 4
	copy(pt[1+size-len(x):1+size], x)
	copy(pt[1+2*size-len(y):], y)
	return ecdsa.ParseUncompressedPublicKey(c, pt)
}

// attestation is a decoded TPMS_ATTEST of a quote or a creation
// certification.
type attestation struct {
	magic        uint32
	typ          uint16
	extraData    []byte
	clock        uint64
	resetCount   uint32
	restartCount uint32

	// Quote: the PCR selection (hash algorithm and bitmap of each bank)
	// and the digest of the selected values.
	pcrSelect []pcrBank
	pcrDigest []byte

	// Creation: the object's name and the digest of its creation data.
	// Certify: the object's name and qualified name.
	objectName   []byte
	creationHash []byte
	qualified    []byte
}

type pcrBank struct {
	hash   uint16
	bitmap []byte
}

// maxPCRBanks bounds a selection list; TPMs have a handful of banks.
const maxPCRBanks = 16

func parseAttestation(b []byte) (*attestation, error) {
	r := &reader{b: b}
	a := &attestation{magic: r.u32(), typ: r.u16()}
	r.sized() // qualifiedSigner
	a.extraData = r.sized()
	a.clock, a.resetCount, a.restartCount = r.u64(), r.u32(), r.u32()
	r.u8()  // safe
	r.u64() // firmwareVersion
	switch a.typ {
	case stAttestQuote:
		a.pcrSelect = parsePCRSelection(r)
		a.pcrDigest = r.sized()
	case stAttestCreation:
		a.objectName, a.creationHash = r.sized(), r.sized()
	case stAttestCertify:
		a.objectName, a.qualified = r.sized(), r.sized()
	default:
		if r.err != nil {
			return nil, r.err
		}
		return nil, fmt.Errorf("attestation type %#x is not a quote, creation or certification", a.typ)
	}
	if err := r.done(); err != nil {
		return nil, err
	}
	return a, nil
}

func parsePCRSelection(r *reader) []pcrBank {
	n := r.u32()
	if n > maxPCRBanks {
		r.err = fmt.Errorf("%d PCR banks", n)
		return nil
	}
	banks := make([]pcrBank, 0, n)
	for range n {
		h := r.u16()
		banks = append(banks, pcrBank{hash: h, bitmap: r.take(int(r.u8()))})
	}
	return banks
}

// checkCreationData checks that b is a well-formed TPMS_CREATION_DATA.
func checkCreationData(b []byte) error {
	r := &reader{b: b}
	parsePCRSelection(r)
	r.sized() // pcrDigest
	r.u8()    // locality
	r.u16()   // parentNameAlg
	r.sized() // parentName
	r.sized() // parentQualifiedName
	r.sized() // outsideInfo
	return r.done()
}

// signature is a decoded TPMT_SIGNATURE (ECDSA or RSASSA).
type signature struct {
	alg  uint16
	hash uint16
	r, s []byte // ECDSA
	sig  []byte // RSASSA
}

func parseSignature(b []byte) (*signature, error) {
	rd := &reader{b: b}
	s := &signature{alg: rd.u16(), hash: rd.u16()}
	switch s.alg {
	case algECDSA:
		s.r, s.s = rd.sized(), rd.sized()
	case algRSASSA:
		s.sig = rd.sized()
	default:
		if rd.err != nil {
			return nil, rd.err
		}
		return nil, fmt.Errorf("signature algorithm %#x not supported", s.alg)
	}
	if err := rd.done(); err != nil {
		return nil, err
	}
	return s, nil
}
