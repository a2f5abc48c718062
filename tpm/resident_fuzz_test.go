package tpm_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/spiffe-hw/spire-hw/tpm"
)

// FuzzVerifyResidentKey feeds the verifier public areas and attestations
// that a software AK signs, so that mutations reach the decoders and the
// attribute checks rather than stopping at the signature. Whatever it
// accepts must be a fixed, TPM-generated, unrestricted signing key equal
// to the CSR's.
func FuzzVerifyResidentKey(f *testing.F) {
	akKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ak := &tpm.AKPublic{Key: &akKey.PublicKey}
	agentKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	qd := []byte("qualifying data")

	pt, _ := agentKey.PublicKey.Bytes()
	pub := tpm.ResidentKeyTemplate
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: pt[1:33]}, Y: tpm2.TPM2BECCParameter{Buffer: pt[33:]}})
	public := tpm2.Marshal(pub)
	sum := sha256.Sum256(public)
	name := append([]byte{0, 0x0b}, sum[:]...)
	attest := tpm2.Marshal(tpm2.TPMSAttest{Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestCertify,
		ExtraData: tpm2.TPM2BData{Buffer: qd},
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestCertify, &tpm2.TPMSCertifyInfo{
			Name: tpm2.TPM2BName{Buffer: name}, QualifiedName: tpm2.TPM2BName{Buffer: name}})})
	sign := func(msg []byte) []byte {
		d := sha256.Sum256(msg)
		r, s, err := ecdsa.Sign(rand.Reader, akKey, d[:])
		if err != nil {
			f.Fatal(err)
		}
		return tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA,
			&tpm2.TPMSSignatureECC{Hash: tpm2.TPMAlgSHA256,
				SignatureR: tpm2.TPM2BECCParameter{Buffer: r.Bytes()}, SignatureS: tpm2.TPM2BECCParameter{Buffer: s.Bytes()}})})
	}
	if err := tpm.VerifyResidentKey(ak, &tpm.Certification{Public: public, Attest: attest, Signature: sign(attest)}, qd, &agentKey.PublicKey); err != nil {
		f.Fatalf("seed refused: %v", err)
	}
	f.Add(public, attest)
	f.Add(tpm2.Marshal(tpm.ResidentKeyTemplate), attest)
	f.Add(public, []byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x17})
	f.Fuzz(func(t *testing.T, public, attest []byte) {
		err := tpm.VerifyResidentKey(ak, &tpm.Certification{Public: public, Attest: attest, Signature: sign(attest)}, qd, &agentKey.PublicKey)
		if err != nil {
			return
		}
		p, err := tpm2.Unmarshal[tpm2.TPMTPublic](public)
		if err != nil {
			t.Fatalf("accepted a public area go-tpm refuses: %v", err)
		}
		a := p.ObjectAttributes
		if !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.SignEncrypt || a.Restricted || a.Decrypt {
			t.Fatalf("accepted a key with attributes %+v", a)
		}
		k, err := tpm.PublicKeyFromTPM(p)
		if err != nil {
			t.Fatal(err)
		}
		ek, ok := k.(*ecdsa.PublicKey)
		if !ok || !ek.Equal(&agentKey.PublicKey) {
			t.Fatal("accepted another key than the CSR's")
		}
	})
}
