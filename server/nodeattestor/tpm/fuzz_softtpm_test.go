package tpm_test

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/google/go-attestation/oid"
	ekx509 "github.com/google/go-attestation/x509"
	"github.com/google/go-tpm/tpm2"
	"github.com/spiffe-hw/spire-hw/tpm"
)

// softTPM is a TPM in software for the fuzz targets, which must run
// without a simulator and fast: the attestation data and the answers of a
// TPM whose private keys the test holds. Its EK certificate follows the TCG
// profile under a root of its own; credential activation and quotes are
// computed as a TPM computes them, so the attestor verifies the real
// cryptography, not a stand-in. The keys are fixed (testdata/softtpm), so
// every fuzz worker and every run trusts the same root and a saved corpus
// keeps its meaning.
type softTPM struct {
	root     *x509.Certificate
	ekKey    *rsa.PrivateKey
	ekCert   []byte
	ekPublic []byte // TPMT_PUBLIC
	ekHash   string
	akKey    *ecdsa.PrivateKey
	ak       tpm.AKParams
	akName   []byte
	akHash   string
	csr      []byte
	csrReq   *x509.CertificateRequest
	csrKey   []byte // PKIX DER of the CSR's key
	// pcrs are the SHA-256 bank: fixed values, one per PCR.
	pcrs map[int][]byte
}

// softEpoch is the start of the soft certificates' validity, and
// softNow the time the attestor is told it is.
var (
	softEpoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	softNow   = softEpoch.Add(24 * time.Hour)
)

func readSoftKey(tb testing.TB, name string) crypto.Signer {
	tb.Helper()
	b, err := os.ReadFile("testdata/softtpm/" + name)
	if err != nil {
		tb.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		tb.Fatalf("%s: no PEM block", name)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	return k.(crypto.Signer)
}

func newSoftTPM(tb testing.TB) *softTPM {
	tb.Helper()
	s := &softTPM{
		ekKey: readSoftKey(tb, "ek.key.pem").(*rsa.PrivateKey),
		akKey: readSoftKey(tb, "ak.key.pem").(*ecdsa.PrivateKey),
		pcrs:  map[int][]byte{},
	}
	for i := range 24 {
		v := sha256.Sum256([]byte{byte(i)})
		s.pcrs[i] = v[:]
	}
	s.makeEK(tb, readSoftKey(tb, "root.key.pem"))
	s.makeAK(tb)

	csrKey := readSoftKey(tb, "csr.key.pem")
	var err error
	if s.csr, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, csrKey); err != nil {
		tb.Fatal(err)
	}
	if s.csrReq, err = x509.ParseCertificateRequest(s.csr); err != nil {
		tb.Fatal(err)
	}
	if s.csrKey, err = x509.MarshalPKIXPublicKey(csrKey.Public()); err != nil {
		tb.Fatal(err)
	}
	return s
}

// makeEK issues the root and the EK certificate. RSA PKCS #1 v1.5
// signatures are deterministic, so both are the same bytes on every run.
func (s *softTPM) makeEK(tb testing.TB, rootKey crypto.Signer) {
	tb.Helper()
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "soft TPM EK root"},
		NotBefore: softEpoch, NotAfter: softEpoch.AddDate(20, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		tb.Fatal(err)
	}
	if s.root, err = x509.ParseCertificate(der); err != nil {
		tb.Fatal(err)
	}
	// The TPM's identity is a directory name in a critical SAN, as the
	// profile requires of a certificate with an empty subject.
	san, err := ekx509.MarshalSubjectAltName(&ekx509.SubjectAltName{DirectoryNames: []pkix.Name{{ExtraNames: []pkix.AttributeTypeAndValue{
		{Type: oid.TPMManufacturer, Value: "id:534F4654"},
		{Type: oid.TPMModel, Value: "soft"},
		{Type: oid.TPMVersion, Value: "id:00000001"},
	}}}}, true)
	if err != nil {
		tb.Fatal(err)
	}
	ekTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), NotBefore: softEpoch, NotAfter: softEpoch.AddDate(10, 0, 0),
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageKeyEncipherment,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{oid.EKCertificate}, ExtraExtensions: []pkix.Extension{san},
	}
	if s.ekCert, err = x509.CreateCertificate(rand.Reader, ekTmpl, s.root, &s.ekKey.PublicKey, rootKey); err != nil {
		tb.Fatal(err)
	}
	pub, err := tpm.EKTemplate(&s.ekKey.PublicKey, false)
	if err != nil {
		tb.Fatal(err)
	}
	s.ekPublic = tpm2.Marshal(pub)
	if s.ekHash, err = tpm.EKHash(&s.ekKey.PublicKey); err != nil {
		tb.Fatal(err)
	}
}

// makeAK builds the AK's public area and the creation attestation a TPM
// signs with a new restricted key.
func (s *softTPM) makeAK(tb testing.TB) {
	tb.Helper()
	pt, err := s.akKey.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		tb.Fatal(err)
	}
	pub := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
			UserWithAuth: true, NoDA: true, Restricted: true, SignEncrypt: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
			CurveID: tpm2.TPMECCNistP256,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: pt[1:33]}, Y: tpm2.TPM2BECCParameter{Buffer: pt[33:]}}),
	}
	s.ak.Public = tpm2.Marshal(pub)
	sum := sha256.Sum256(s.ak.Public)
	s.akName = append([]byte{0x00, 0x0b}, sum[:]...)
	s.akHash = hex.EncodeToString(sum[:])
	s.ak.CreateData = tpm2.Marshal(tpm2.TPMSCreationData{ParentNameAlg: tpm2.TPMAlgSHA256})
	creationHash := sha256.Sum256(s.ak.CreateData)
	s.ak.CreateAttestation = tpm2.Marshal(tpm2.TPMSAttest{
		Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestCreation,
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestCreation, &tpm2.TPMSCreationInfo{
			ObjectName: tpm2.TPM2BName{Buffer: s.akName}, CreationHash: tpm2.TPM2BDigest{Buffer: creationHash[:]}}),
	})
	s.ak.CreateSignature = s.sign(s.ak.CreateAttestation)
}

// roots is the trust configuration the attestor is given: the soft root.
func (s *softTPM) roots() *tpm.EKRoots {
	pool := x509.NewCertPool()
	pool.AddCert(s.root)
	return &tpm.EKRoots{Roots: pool, Intermediates: x509.NewCertPool()}
}

// data is the honest attestation data.
func (s *softTPM) data() tpm.AttestationData {
	return tpm.AttestationData{EKCert: s.ekCert, EKPublic: s.ekPublic, AK: s.ak, CSR: s.csr}
}

// sign makes the TPMT_SIGNATURE of the AK over msg.
func (s *softTPM) sign(msg []byte) []byte {
	d := sha256.Sum256(msg)
	r, ss, err := ecdsa.Sign(rand.Reader, s.akKey, d[:])
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
		Hash: tpm2.TPMAlgSHA256, SignatureR: tpm2.TPM2BECCParameter{Buffer: r.FillBytes(make([]byte, 32))},
		SignatureS: tpm2.TPM2BECCParameter{Buffer: ss.FillBytes(make([]byte, 32))}})})
}

var errActivation = errors.New("soft TPM: credential activation failed")

// activate is TPM2_ActivateCredential with the soft EK and AK: it
// recovers the seed with the EK, checks the credential's HMAC over the AK
// name and decrypts the secret. It refuses, as a TPM does, a credential
// made for another EK or another AK.
func (s *softTPM) activate(c tpm.Credential) ([]byte, error) {
	seed, err := rsa.DecryptOAEP(sha256.New(), nil, s.ekKey, c.EncryptedSecret, []byte("IDENTITY\x00"))
	if err != nil || len(c.IDObject) < 2 {
		return nil, errActivation
	}
	n := int(binary.BigEndian.Uint16(c.IDObject))
	if len(c.IDObject) < 2+n {
		return nil, errActivation
	}
	integrity, enc := c.IDObject[2:2+n], c.IDObject[2+n:]
	mac := hmac.New(sha256.New, tpm2.KDFa(crypto.SHA256, seed, "INTEGRITY", nil, nil, 256))
	mac.Write(enc)
	mac.Write(s.akName)
	if !hmac.Equal(mac.Sum(nil), integrity) {
		return nil, errActivation
	}
	block, err := aes.NewCipher(tpm2.KDFa(crypto.SHA256, seed, "STORAGE", s.akName, nil, 128))
	if err != nil {
		return nil, errActivation
	}
	plain := make([]byte, len(enc))
	//lint:ignore SA1019 the TPM encrypts credentials with AES-CFB (TPM 2.0 Part 1, credential protection)
	cipher.NewCFBDecrypter(block, make([]byte, aes.BlockSize)).XORKeyStream(plain, enc)
	if len(plain) < 2 || int(binary.BigEndian.Uint16(plain)) != len(plain)-2 {
		return nil, errActivation
	}
	return plain[2:], nil
}

// quote is TPM2_Quote of pcrs over qualifyingData.
func (s *softTPM) quote(qualifyingData []byte, pcrs []int) (tpm.Quote, error) {
	sel, err := tpm.PCRSelection(pcrs)
	if err != nil {
		return tpm.Quote{}, err
	}
	idx := slices.Clone(pcrs)
	slices.Sort(idx)
	idx = slices.Compact(idx)
	h := sha256.New()
	values := map[int][]byte{}
	for _, i := range idx {
		h.Write(s.pcrs[i])
		values[i] = s.pcrs[i]
	}
	attest := tpm2.Marshal(tpm2.TPMSAttest{
		Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestQuote,
		ExtraData: tpm2.TPM2BData{Buffer: qualifyingData},
		ClockInfo: tpm2.TPMSClockInfo{Clock: 1000, ResetCount: 1, Safe: true},
		Attested:  tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{PCRSelect: sel, PCRDigest: tpm2.TPM2BDigest{Buffer: h.Sum(nil)}}),
	})
	return tpm.Quote{Attest: attest, Signature: s.sign(attest), PCRs: values}, nil
}

// answer is the honest response to the challenge c.
func (s *softTPM) answer(c *tpm.Challenge) (*tpm.ChallengeResponse, error) {
	secret, err := s.activate(c.Credential)
	if err != nil {
		return nil, err
	}
	q, err := s.quote(tpm.QualifyingData(c.Nonce, s.csrKey), c.PCRs)
	if err != nil {
		return nil, err
	}
	return &tpm.ChallengeResponse{Secret: secret, Nonce: c.Nonce, Quote: q}, nil
}

// certify is the AK's TPM2_Certify of the CSR key as a resident key (the
// template the agent's TPM uses) for the challenge nonce: the proof an
// agent with KeyManager "tpm" adds to its answer.
func (s *softTPM) certify(nonce []byte) *tpm.Certification {
	pt, err := s.csrReq.PublicKey.(*ecdsa.PublicKey).Bytes() // 0x04 || X || Y
	if err != nil {
		panic(err) // a parsed P-256 key always encodes
	}
	pub := tpm.ResidentKeyTemplate
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: pt[1:33]}, Y: tpm2.TPM2BECCParameter{Buffer: pt[33:]}})
	public := tpm2.Marshal(pub)
	sum := sha256.Sum256(public)
	name := append([]byte{0x00, 0x0b}, sum[:]...)
	attest := tpm2.Marshal(tpm2.TPMSAttest{
		Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestCertify,
		ExtraData: tpm2.TPM2BData{Buffer: tpm.AgentKeyQualifyingData(nonce, s.csrKey)},
		ClockInfo: tpm2.TPMSClockInfo{Clock: 1000, ResetCount: 1, Safe: true},
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestCertify, &tpm2.TPMSCertifyInfo{
			Name: tpm2.TPM2BName{Buffer: name}, QualifiedName: tpm2.TPM2BName{Buffer: name}}),
	})
	return &tpm.Certification{Public: public, Attest: attest, Signature: s.sign(attest)}
}

// Fix-ups the response fuzz target applies to a response before sending
// it, chosen by the bits of its second input: without them a mutated
// response could never get past the fresh nonce, the secret only the EK
// releases and the AK's signature, and the checks behind them would go
// unfuzzed.
const (
	fixNonce     = 1 << iota // echo the challenge's nonce
	fixSecret                // send the activated secret
	fixExtraData             // set the quote's qualifying data to the nonce and CSR key
	fixSignature             // sign the quote's attestation again with the AK
	fixAgentKey              // bind agent_key's certification to the nonce and CSR key, and sign it again
	fixAll       = fixNonce | fixSecret | fixExtraData | fixSignature | fixAgentKey
)

// fixResponse applies fix to raw, when raw decodes as a response; other
// bytes are sent as they are.
func (s *softTPM) fixResponse(raw []byte, fix uint8, c *tpm.Challenge) []byte {
	var r tpm.ChallengeResponse
	if fix&fixAll == 0 || json.Unmarshal(raw, &r) != nil {
		return raw
	}
	if fix&fixNonce != 0 {
		r.Nonce = c.Nonce
	}
	if fix&fixSecret != 0 {
		if secret, err := s.activate(c.Credential); err == nil {
			r.Secret = secret
		}
	}
	if fix&fixExtraData != 0 {
		if a, err := tpm2.Unmarshal[tpm2.TPMSAttest](r.Quote.Attest); err == nil {
			a.ExtraData = tpm2.TPM2BData{Buffer: tpm.QualifyingData(c.Nonce, s.csrKey)}
			r.Quote.Attest = tpm2.Marshal(*a)
		}
	}
	if fix&fixSignature != 0 {
		r.Quote.Signature = s.sign(r.Quote.Attest)
	}
	if k := r.AgentKey; fix&fixAgentKey != 0 && k != nil {
		if a, err := tpm2.Unmarshal[tpm2.TPMSAttest](k.Attest); err == nil {
			a.ExtraData = tpm2.TPM2BData{Buffer: tpm.AgentKeyQualifyingData(c.Nonce, s.csrKey)}
			k.Attest = tpm2.Marshal(*a)
		}
		k.Signature = s.sign(k.Attest)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return raw
	}
	return b
}
