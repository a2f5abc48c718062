package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/google/go-attestation/attest"
	ekx509 "github.com/google/go-attestation/x509"
	"github.com/google/go-tpm/tpm2"
	"github.com/spiffe-hw/spire-hw/tpm"
)

// The verifier as it was before it was tuned, kept so that one run
// measures both and reports their ratio: the full EK chain verified on
// every attestation, go-attestation's AK checks (the legacy go-tpm
// decoder), and go-tpm's reflection-driven decoding of quotes and
// signatures. It is the reference point of the benchmark, not a second
// implementation to use.

func baselineVerifyEK(der []byte, roots *tpm.EKRoots, now time.Time) (crypto.PublicKey, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if _, err := ekx509.ToEKCertificate(cert); err != nil {
		return nil, err
	}
	_, err = cert.Verify(x509.VerifyOptions{Roots: roots.Roots, Intermediates: roots.Intermediates, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return cert.PublicKey, err
}

type baselineAK struct {
	name []byte
	key  *ecdsa.PublicKey
}

func baselineVerifyAK(p tpm.AKParams) (*baselineAK, error) {
	ap := attest.ActivationParameters{AK: attest.AttestationParameters{Public: p.Public, CreateData: p.CreateData,
		CreateAttestation: p.CreateAttestation, CreateSignature: p.CreateSignature}}
	if err := ap.CheckAKParameters(); err != nil {
		return nil, err
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](p.Public)
	if err != nil {
		return nil, err
	}
	name, err := tpm2.ObjectName(pub)
	if err != nil {
		return nil, err
	}
	k, err := tpm.PublicKeyFromTPM(pub)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(*ecdsa.PublicKey)
	if !ok {
		return nil, errors.New("not an ECC AK")
	}
	return &baselineAK{name: name.Buffer, key: ek}, nil
}

func baselineVerifyQuote(ak *baselineAK, q *tpm.Quote, qd []byte) error {
	sig, err := tpm2.Unmarshal[tpm2.TPMTSignature](q.Signature)
	if err != nil {
		return err
	}
	s, err := sig.Signature.ECDSA()
	if err != nil {
		return err
	}
	h, err := s.Hash.Hash()
	if err != nil {
		return err
	}
	d := h.New()
	d.Write(q.Attest)
	if !ecdsa.Verify(ak.key, d.Sum(nil), new(big.Int).SetBytes(s.SignatureR.Buffer), new(big.Int).SetBytes(s.SignatureS.Buffer)) {
		return errors.New("bad signature")
	}
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](q.Attest)
	if err != nil {
		return err
	}
	if att.Magic != tpm2.TPMGeneratedValue || att.Type != tpm2.TPMSTAttestQuote || !bytes.Equal(att.ExtraData.Buffer, qd) {
		return errors.New("not a quote over the nonce")
	}
	if _, err := att.Attested.Quote(); err != nil {
		return fmt.Errorf("quote info: %w", err)
	}
	return nil
}
