package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// EK certificate NV indices from the TCG EK Credential Profile, in the
// order EK prefers them: the low range (RSA 2048, ECC P-256) first, then
// the high range.
var ekCertIndices = []uint32{
	0x01c0000a, // ECC NIST P-256, low range
	0x01c00002, // RSA 2048, low range
	0x01c00014, // ECC NIST P-256, high range
	0x01c00016, // ECC NIST P-384, high range
	0x01c00018, // ECC NIST P-521, high range
	0x01c00012, // RSA 2048, high range
	0x01c0001c, // RSA 3072, high range
	0x01c0001e, // RSA 4096, high range
}

// policyCSHA384 is PolicyC (PolicyAuthorizeNV of 0x01c07f02) for SHA-384
// from the EK Credential Profile; a high-range EK's policy is
// PolicyOR(PolicyA, PolicyC), so satisfying PolicyA needs it in the OR list.
var policyCSHA384, _ = hex.DecodeString("d6032ce61f2fb3c240eb3cf6a33237ef2b6a16f4293c22b455e261cffd217ad5b4947c2d73e63005eed2dc2b3593d165")

// EK is an endorsement key: its certificate (when the TPM has one) and its
// TPMT_PUBLIC.
type EK struct {
	// Certificate is the DER EK certificate, nil when the TPM has none.
	Certificate []byte
	// Public is the marshalled TPMT_PUBLIC of the key.
	Public []byte

	pub       tpm2.TPMTPublic
	handle    tpm2.TPMHandle // persistent handle, or 0 to re-create the primary
	highRange bool
	publicKey crypto.PublicKey
}

// PublicKey returns the EK's public key.
func (e *EK) PublicKey() crypto.PublicKey { return e.publicKey }

// EKOption selects an EK.
type EKOption func(*ekOptions)

type ekOptions struct{ alg string }

// WithEKAlgorithm picks the EK of one algorithm, "rsa" or "ecc"; by default
// the first certificate found in ekCertIndices order wins.
func WithEKAlgorithm(alg string) EKOption { return func(o *ekOptions) { o.alg = alg } }

// EK reads an EK certificate and finds the matching key: a persistent EK
// whose public key equals the certificate's, or else the primary created
// from the profile's template. Without any certificate it returns the
// low-range EK of the requested (default RSA) algorithm with no certificate,
// for servers that allow-list EK hashes.
func (t *TPM) EK(opts ...EKOption) (*EK, error) {
	var o ekOptions
	for _, opt := range opts {
		opt(&o)
	}
	for _, idx := range ekCertIndices {
		if !indexMatchesAlg(idx, o.alg) {
			continue
		}
		der, err := t.readNV(idx)
		if err != nil {
			continue // absent index: try the next
		}
		ek, err := t.ekForCert(idx, der)
		if err != nil {
			return nil, err
		}
		return ek, nil
	}
	// No certificate: the low-range EK of the chosen algorithm.
	tmpl := tpm2.RSAEKTemplate
	if o.alg == "ecc" {
		tmpl = tpm2.ECCEKTemplate
	}
	pub, err := t.createEK(tmpl)
	if err != nil {
		return nil, fmt.Errorf("tpm: %w: %w", errNoEK, err)
	}
	return newEK(nil, pub, 0, false)
}

func indexMatchesAlg(idx uint32, alg string) bool {
	isRSA := idx == 0x01c00002 || idx == 0x01c00012 || idx == 0x01c0001c || idx == 0x01c0001e
	switch alg {
	case "rsa":
		return isRSA
	case "ecc":
		return !isRSA
	default:
		return true
	}
}

func (t *TPM) ekForCert(idx uint32, der []byte) (*EK, error) {
	der = trimDER(der)
	certKey, err := certPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("tpm: EK certificate at %#x: %w", idx, err)
	}
	high := idx >= 0x01c00012
	// A persistent EK saves a primary key generation (seconds on some TPMs).
	handles, _ := t.persistentHandles()
	for _, h := range handles {
		rsp, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(h)}.Execute(t)
		if err != nil {
			continue
		}
		pub, err := rsp.OutPublic.Contents()
		if err != nil {
			continue
		}
		if !isEKShaped(pub) {
			continue
		}
		if k, err := PublicKeyFromTPM(pub); err == nil && keysEqual(k, certKey) {
			return newEK(der, *pub, tpm2.TPMHandle(h), high)
		}
	}
	tmpl, err := EKTemplate(certKey, high)
	if err != nil {
		return nil, fmt.Errorf("tpm: EK certificate at %#x: %w", idx, err)
	}
	pub, err := t.createEK(creationTemplate(tmpl, high))
	if err != nil {
		return nil, err
	}
	k, err := PublicKeyFromTPM(&pub)
	if err != nil || !keysEqual(k, certKey) {
		return nil, fmt.Errorf("tpm: no EK matches the certificate at %#x", idx)
	}
	return newEK(der, pub, 0, high)
}

func newEK(cert []byte, pub tpm2.TPMTPublic, h tpm2.TPMHandle, high bool) (*EK, error) {
	k, err := PublicKeyFromTPM(&pub)
	if err != nil {
		return nil, fmt.Errorf("tpm: EK public key: %w", err)
	}
	return &EK{Certificate: cert, Public: tpm2.Marshal(pub), pub: pub, handle: h, highRange: high, publicKey: k}, nil
}

func isEKShaped(p *tpm2.TPMTPublic) bool {
	a := p.ObjectAttributes
	return a.FixedTPM && a.FixedParent && a.Restricted && a.Decrypt && !a.SignEncrypt && a.AdminWithPolicy
}

// createEK creates the EK primary to read its public area and flushes it.
func (t *TPM) createEK(tmpl tpm2.TPMTPublic) (tpm2.TPMTPublic, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHEndorsement,
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(t)
	if err != nil {
		return tpm2.TPMTPublic{}, fmt.Errorf("tpm: create EK: %w", err)
	}
	defer t.flush(rsp.ObjectHandle)
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return tpm2.TPMTPublic{}, fmt.Errorf("tpm: create EK: %w", err)
	}
	return *pub, nil
}

// loadEK makes the EK usable for ActivateCredential and returns a cleanup
// that flushes it when it was created for the purpose.
func (t *TPM) loadEK(ek *EK) (tpm2.TPMHandle, tpm2.TPM2BName, func(), error) {
	if ek.handle != 0 {
		rsp, err := tpm2.ReadPublic{ObjectHandle: ek.handle}.Execute(t)
		if err != nil {
			return 0, tpm2.TPM2BName{}, nil, fmt.Errorf("tpm: read EK: %w", err)
		}
		return ek.handle, rsp.Name, func() {}, nil
	}
	tmpl := creationTemplate(ek.pub, ek.highRange)
	rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(tmpl)}.Execute(t)
	if err != nil {
		return 0, tpm2.TPM2BName{}, nil, fmt.Errorf("tpm: create EK: %w", err)
	}
	return rsp.ObjectHandle, rsp.Name, func() { t.flush(rsp.ObjectHandle) }, nil
}

// readNV reads a whole NV index in chunks the TPM accepts.
func (t *TPM) readNV(idx uint32) ([]byte, error) {
	pubRsp, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(idx)}.Execute(t)
	if err != nil {
		return nil, err
	}
	nvPub, err := pubRsp.NVPublic.Contents()
	if err != nil {
		return nil, err
	}
	auth := tpm2.AuthHandle{Handle: tpm2.TPMHandle(idx), Name: pubRsp.NVName, Auth: tpm2.PasswordAuth(nil)}
	if !nvPub.Attributes.AuthRead {
		auth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	}
	const chunk = 768
	size := int(nvPub.DataSize)
	out := make([]byte, 0, size)
	for off := 0; off < size; off += chunk {
		n := min(chunk, size-off)
		rsp, err := tpm2.NVRead{
			AuthHandle: auth,
			NVIndex:    tpm2.NamedHandle{Handle: tpm2.TPMHandle(idx), Name: pubRsp.NVName},
			Size:       uint16(n),
			Offset:     uint16(off),
		}.Execute(t)
		if err != nil {
			return nil, err
		}
		out = append(out, rsp.Data.Buffer...)
	}
	return out, nil
}

func (t *TPM) persistentHandles() ([]uint32, error) {
	rsp, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapHandles,
		Property:      uint32(tpm2.TPMHTPersistent) << 24,
		PropertyCount: 64,
	}.Execute(t)
	if err != nil {
		return nil, err
	}
	hs, err := rsp.CapabilityData.Data.Handles()
	if err != nil {
		return nil, err
	}
	out := make([]uint32, 0, len(hs.Handle))
	for _, h := range hs.Handle {
		out = append(out, uint32(h))
	}
	return out, nil
}

// trimDER drops the padding some manufacturers leave after the certificate
// in its NV index.
func trimDER(b []byte) []byte {
	var raw asn1.RawValue
	if rest, err := asn1.Unmarshal(b, &raw); err == nil {
		return b[:len(b)-len(rest)]
	}
	return b
}

// EKTemplate is the EK Credential Profile template for an EK with public
// key pub (RSA 2048, ECC P-256 or P-384), with its unique field set to the
// key: MakeCredential needs the name algorithm and symmetric parameters of
// the real EK, and the profile fixes them per key type and range.
func EKTemplate(pub crypto.PublicKey, highRange bool) (tpm2.TPMTPublic, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() != 2048 {
			return tpm2.TPMTPublic{}, fmt.Errorf("unsupported RSA EK size %d", k.N.BitLen())
		}
		t := tpm2.RSAEKTemplate
		if highRange {
			t = highRangeRSA2048()
		}
		t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()})
		return t, nil
	case *ecdsa.PublicKey:
		var t tpm2.TPMTPublic
		switch k.Curve {
		case elliptic.P256():
			t = tpm2.ECCEKTemplate
			if highRange {
				t = highRangeECC(tpm2.TPMAlgSHA256, tpm2.TPMECCNistP256, 128)
			}
		case elliptic.P384():
			t = highRangeECC(tpm2.TPMAlgSHA384, tpm2.TPMECCNistP384, 256)
		default:
			return tpm2.TPMTPublic{}, fmt.Errorf("unsupported EK curve %s", k.Curve.Params().Name)
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		pt, err := k.Bytes() // 0x04 || X || Y
		if err != nil {
			return tpm2.TPMTPublic{}, err
		}
		t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: pt[1 : 1+size]},
			Y: tpm2.TPM2BECCParameter{Buffer: pt[1+size:]},
		})
		return t, nil
	default:
		return tpm2.TPMTPublic{}, fmt.Errorf("unsupported EK key type %T", pub)
	}
}

func highRangeAttrs() tpm2.TPMAObject {
	return tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
		UserWithAuth: true, AdminWithPolicy: true, Restricted: true, Decrypt: true}
}

func policyB(alg tpm2.TPMAlgID) []byte {
	a, c := policyA(alg), policyCSHA384
	if alg == tpm2.TPMAlgSHA256 {
		c, _ = hex.DecodeString("3767e2edd43ff45a3a7e1eaefcef78643dca964632e7aad82c673a30d8633fde")
	}
	calc, _ := tpm2.NewPolicyCalculator(alg)
	_ = tpm2.PolicyOr{PHashList: tpm2.TPMLDigest{Digests: []tpm2.TPM2BDigest{{Buffer: a}, {Buffer: c}}}}.Update(calc)
	return calc.Hash().Digest
}

// policyA is PolicySecret(TPM_RH_ENDORSEMENT), the branch an EK holder
// satisfies with the (empty) endorsement authorization.
func policyA(alg tpm2.TPMAlgID) []byte {
	calc, _ := tpm2.NewPolicyCalculator(alg)
	_ = tpm2.PolicySecret{AuthHandle: tpm2.NamedHandle{Handle: tpm2.TPMRHEndorsement, Name: tpm2.HandleName(tpm2.TPMRHEndorsement)}}.Update(calc)
	return calc.Hash().Digest
}

func policyC(alg tpm2.TPMAlgID) []byte {
	if alg == tpm2.TPMAlgSHA256 {
		c, _ := hex.DecodeString("3767e2edd43ff45a3a7e1eaefcef78643dca964632e7aad82c673a30d8633fde")
		return c
	}
	return policyCSHA384
}

func highRangeRSA2048() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgRSA,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: highRangeAttrs(),
		AuthPolicy:       tpm2.TPM2BDigest{Buffer: policyB(tpm2.TPMAlgSHA256)},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{
				Algorithm: tpm2.TPMAlgAES,
				KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
				Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
			},
			KeyBits: 2048,
		}),
	}
}

func highRangeECC(nameAlg tpm2.TPMAlgID, curve tpm2.TPMECCCurve, aesBits int) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgECC,
		NameAlg:          nameAlg,
		ObjectAttributes: highRangeAttrs(),
		AuthPolicy:       tpm2.TPM2BDigest{Buffer: policyB(nameAlg)},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{
				Algorithm: tpm2.TPMAlgAES,
				KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(aesBits)),
				Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
			},
			CurveID: curve,
		}),
	}
}

// creationTemplate turns an EK's public area back into the template that
// creates it: high-range templates have an empty unique field, low-range
// ones the zero-filled field of the reference templates.
func creationTemplate(t tpm2.TPMTPublic, highRange bool) tpm2.TPMTPublic {
	switch {
	case !highRange && t.Type == tpm2.TPMAlgRSA:
		return tpm2.RSAEKTemplate
	case !highRange:
		return tpm2.ECCEKTemplate
	case t.Type == tpm2.TPMAlgRSA:
		t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{})
	default:
		t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
	}
	return t
}

// PublicKeyFromTPM converts a TPMT_PUBLIC of an RSA or ECC key to a Go key.
func PublicKeyFromTPM(p *tpm2.TPMTPublic) (crypto.PublicKey, error) {
	switch p.Type {
	case tpm2.TPMAlgRSA:
		parms, err := p.Parameters.RSADetail()
		if err != nil {
			return nil, err
		}
		u, err := p.Unique.RSA()
		if err != nil {
			return nil, err
		}
		return tpm2.RSAPub(parms, u)
	case tpm2.TPMAlgECC:
		parms, err := p.Parameters.ECCDetail()
		if err != nil {
			return nil, err
		}
		u, err := p.Unique.ECC()
		if err != nil {
			return nil, err
		}
		var c elliptic.Curve
		switch parms.CurveID {
		case tpm2.TPMECCNistP256:
			c = elliptic.P256()
		case tpm2.TPMECCNistP384:
			c = elliptic.P384()
		case tpm2.TPMECCNistP521:
			c = elliptic.P521()
		default:
			return nil, fmt.Errorf("unsupported curve %#x", parms.CurveID)
		}
		size := (c.Params().BitSize + 7) / 8
		if len(u.X.Buffer) > size || len(u.Y.Buffer) > size {
			return nil, errors.New("ECC point coordinates too long")
		}
		pt := make([]byte, 1+2*size)
		pt[0] = 4
		copy(pt[1+size-len(u.X.Buffer):1+size], u.X.Buffer)
		copy(pt[1+2*size-len(u.Y.Buffer):], u.Y.Buffer)
		k, err := ecdsa.ParseUncompressedPublicKey(c, pt) // checks the point is on the curve
		if err != nil {
			return nil, err
		}
		return k, nil
	default:
		return nil, fmt.Errorf("unsupported key type %#x", p.Type)
	}
}

func keysEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}

func certPublicKey(der []byte) (crypto.PublicKey, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return c.PublicKey, nil
}
