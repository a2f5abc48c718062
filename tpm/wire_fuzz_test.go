package tpm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// The hand-written decoders are checked against go-tpm's: whatever they
// accept, go-tpm decodes to the same values and re-encodes to the same
// bytes (so hashing the received bytes is hashing the structure), and
// garbage never panics.

func seedPublic(t testing.TB) []byte {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pt, _ := k.PublicKey.Bytes()
	p := akTemplate
	p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: pt[1:33]}, Y: tpm2.TPM2BECCParameter{Buffer: pt[33:]}})
	return tpm2.Marshal(p)
}

func FuzzParseSigningPublic(f *testing.F) {
	f.Add(seedPublic(f))
	f.Add(tpm2.Marshal(tpm2.RSASRKTemplate))
	f.Add([]byte{0, 0x23, 0, 0x0b})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseSigningPublic(b)
		if err != nil {
			return
		}
		ref, err := tpm2.Unmarshal[tpm2.TPMTPublic](b)
		if err != nil {
			t.Fatalf("accepted what go-tpm refuses: %v", err)
		}
		if !bytes.Equal(tpm2.Marshal(*ref), b) {
			t.Fatal("accepted a non-canonical encoding")
		}
		k, err := PublicKeyFromTPM(ref)
		if err != nil || !keysEqual(k, p.key) {
			t.Fatalf("key differs from go-tpm's (%v)", err)
		}
		if uint16(ref.NameAlg) != p.nameAlg || ref.ObjectAttributes.Restricted != (p.attrs&attrRestricted != 0) ||
			ref.ObjectAttributes.FixedTPM != (p.attrs&attrFixedTPM != 0) || ref.ObjectAttributes.Decrypt != (p.attrs&attrDecrypt != 0) {
			t.Fatal("name algorithm or attributes differ from go-tpm's")
		}
	})
}

func FuzzParseAttestation(f *testing.F) {
	quote := tpm2.TPMSAttest{Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestQuote,
		ExtraData: tpm2.TPM2BData{Buffer: []byte("nonce")},
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0xff, 0, 0}}}},
			PCRDigest: tpm2.TPM2BDigest{Buffer: make([]byte, 32)}})}
	creation := tpm2.TPMSAttest{Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestCreation,
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestCreation, &tpm2.TPMSCreationInfo{
			ObjectName: tpm2.TPM2BName{Buffer: []byte{0, 0x0b, 1}}, CreationHash: tpm2.TPM2BDigest{Buffer: make([]byte, 32)}})}
	certify := tpm2.TPMSAttest{Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestCertify,
		ExtraData: tpm2.TPM2BData{Buffer: make([]byte, 32)},
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestCertify, &tpm2.TPMSCertifyInfo{
			Name: tpm2.TPM2BName{Buffer: []byte{0, 0x0b, 2}}, QualifiedName: tpm2.TPM2BName{Buffer: []byte{0, 0x0b, 3}}})}
	f.Add(tpm2.Marshal(quote))
	f.Add(tpm2.Marshal(creation))
	f.Add(tpm2.Marshal(certify))
	f.Add([]byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x18})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := parseAttestation(b)
		if err != nil {
			return
		}
		ref, err := tpm2.Unmarshal[tpm2.TPMSAttest](b)
		if err != nil {
			t.Fatalf("accepted what go-tpm refuses: %v", err)
		}
		if uint32(ref.Magic) != a.magic || uint16(ref.Type) != a.typ || !bytes.Equal(ref.ExtraData.Buffer, a.extraData) ||
			ref.ClockInfo.Clock != a.clock || ref.ClockInfo.ResetCount != a.resetCount || ref.ClockInfo.RestartCount != a.restartCount {
			t.Fatal("header differs from go-tpm's")
		}
		switch a.typ {
		case stAttestQuote:
			q, err := ref.Attested.Quote()
			if err != nil || !bytes.Equal(q.PCRDigest.Buffer, a.pcrDigest) || len(q.PCRSelect.PCRSelections) != len(a.pcrSelect) {
				t.Fatalf("quote differs from go-tpm's (%v)", err)
			}
			for i, s := range q.PCRSelect.PCRSelections {
				if uint16(s.Hash) != a.pcrSelect[i].hash || !bytes.Equal(s.PCRSelect, a.pcrSelect[i].bitmap) {
					t.Fatal("PCR selection differs from go-tpm's")
				}
			}
		case stAttestCreation:
			c, err := ref.Attested.Creation()
			if err != nil || !bytes.Equal(c.ObjectName.Buffer, a.objectName) || !bytes.Equal(c.CreationHash.Buffer, a.creationHash) {
				t.Fatalf("creation info differs from go-tpm's (%v)", err)
			}
		case stAttestCertify:
			c, err := ref.Attested.Certify()
			if err != nil || !bytes.Equal(c.Name.Buffer, a.objectName) || !bytes.Equal(c.QualifiedName.Buffer, a.qualified) {
				t.Fatalf("certify info differs from go-tpm's (%v)", err)
			}
		}
	})
}

func FuzzParseSignature(f *testing.F) {
	f.Add(tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA,
		&tpm2.TPMSSignatureECC{Hash: tpm2.TPMAlgSHA256, SignatureR: tpm2.TPM2BECCParameter{Buffer: []byte{1}}, SignatureS: tpm2.TPM2BECCParameter{Buffer: []byte{2}}})}))
	f.Add(tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgRSASSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgRSASSA,
		&tpm2.TPMSSignatureRSA{Hash: tpm2.TPMAlgSHA256, Sig: tpm2.TPM2BPublicKeyRSA{Buffer: []byte{1, 2}}})}))
	f.Add([]byte{0, 0x18, 0, 0x0b, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseSignature(b)
		if err != nil {
			return
		}
		ref, err := tpm2.Unmarshal[tpm2.TPMTSignature](b)
		if err != nil {
			t.Fatalf("accepted what go-tpm refuses: %v", err)
		}
		switch s.alg {
		case algECDSA:
			e, err := ref.Signature.ECDSA()
			if err != nil || uint16(e.Hash) != s.hash || !bytes.Equal(e.SignatureR.Buffer, s.r) || !bytes.Equal(e.SignatureS.Buffer, s.s) {
				t.Fatalf("ECDSA signature differs from go-tpm's (%v)", err)
			}
		case algRSASSA:
			r, err := ref.Signature.RSASSA()
			if err != nil || uint16(r.Hash) != s.hash || !bytes.Equal(r.Sig.Buffer, s.sig) {
				t.Fatalf("RSASSA signature differs from go-tpm's (%v)", err)
			}
		}
	})
}

func FuzzCheckCreationData(f *testing.F) {
	f.Add(tpm2.Marshal(tpm2.TPMSCreationData{
		PCRSelect:     tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0, 0, 0}}}},
		ParentNameAlg: tpm2.TPMAlgSHA256}))
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if checkCreationData(b) != nil {
			return
		}
		if _, err := tpm2.Unmarshal[tpm2.TPMSCreationData](b); err != nil {
			t.Fatalf("accepted what go-tpm refuses: %v", err)
		}
	})
}
