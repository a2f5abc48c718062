package ca

import (
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
)

// InProcessKey is implemented by keys whose signatures are computed by Go's
// own crypto in this process (the memory and disk key managers). The CA
// does not verify what they sign: a second check of the standard library's
// own signature costs more than the signature itself and catches nothing a
// hardware or remote signer could get wrong. Every other key's signatures
// are verified once before a certificate leaves.
type InProcessKey interface {
	InProcess() bool
}

// errTBSCaptured stops x509.CreateCertificate once it has handed over the
// to-be-signed bytes.
var errTBSCaptured = errors.New("ca: tbs captured")

// tbsCapture is a crypto.MessageSigner that keeps the message it is asked
// to sign (the TBSCertificate) and refuses to sign it, so that the
// certificate can be signed once, here, instead of being signed and then
// verified inside x509.CreateCertificate.
type tbsCapture struct {
	pub crypto.PublicKey
	tbs []byte
}

func (c *tbsCapture) Public() crypto.PublicKey { return c.pub }

func (c *tbsCapture) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errTBSCaptured
}

func (c *tbsCapture) SignMessage(_ io.Reader, msg []byte, _ crypto.SignerOpts) ([]byte, error) {
	c.tbs = append([]byte(nil), msg...)
	return nil, errTBSCaptured
}

// createCertificate is x509.CreateCertificate with exactly one signature
// check, skipped for in-process keys, instead of CreateCertificate's own
// check plus the caller's.
func createCertificate(rnd io.Reader, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) (*x509.Certificate, error) {
	capture := &tbsCapture{pub: key.Public()}
	if _, err := x509.CreateCertificate(rnd, tmpl, parent, pub, capture); !errors.Is(err, errTBSCaptured) || capture.tbs == nil {
		if err == nil {
			err = errors.New("certificate was not handed to the signer")
		}
		return nil, err
	}
	sigAlg, hash, err := signatureAlgorithm(capture.tbs)
	if err != nil {
		return nil, err
	}
	digest := capture.tbs
	if hash != 0 {
		h := hash.New()
		h.Write(capture.tbs)
		digest = h.Sum(nil)
	}
	sig, err := key.Sign(rnd, digest, hash)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	der, err := asn1.Marshal(struct {
		TBS       asn1.RawValue
		Algorithm asn1.RawValue
		Signature asn1.BitString
	}{
		TBS:       asn1.RawValue{FullBytes: capture.tbs},
		Algorithm: asn1.RawValue{FullBytes: sigAlg},
		Signature: asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)},
	})
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if ip, ok := key.(InProcessKey); ok && ip.InProcess() {
		return cert, nil
	}
	if err := parent.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		return nil, fmt.Errorf("signature does not verify against the CA: %w", err)
	}
	return cert, nil
}

// signatureAlgorithm returns the DER AlgorithmIdentifier inside a
// TBSCertificate (its third field, after the optional version and the
// serial) and the hash it implies. The outer certificate must repeat it.
func signatureAlgorithm(tbs []byte) ([]byte, crypto.Hash, error) {
	var seq asn1.RawValue
	if _, err := asn1.Unmarshal(tbs, &seq); err != nil {
		return nil, 0, fmt.Errorf("tbs: %w", err)
	}
	rest := seq.Bytes
	var field asn1.RawValue
	var err error
	if rest, err = asn1.Unmarshal(rest, &field); err != nil {
		return nil, 0, fmt.Errorf("tbs: %w", err)
	}
	if field.Class == asn1.ClassContextSpecific { // [0] version
		if rest, err = asn1.Unmarshal(rest, &field); err != nil { // serial
			return nil, 0, fmt.Errorf("tbs: %w", err)
		}
	}
	var alg struct {
		Raw       asn1.RawContent
		Algorithm asn1.ObjectIdentifier
		Params    asn1.RawValue `asn1:"optional"`
	}
	if _, err := asn1.Unmarshal(rest, &alg); err != nil {
		return nil, 0, fmt.Errorf("tbs: signature algorithm: %w", err)
	}
	for _, a := range hashes {
		if alg.Algorithm.Equal(a.oid) {
			return alg.Raw, a.hash, nil
		}
	}
	return nil, 0, fmt.Errorf("tbs: unsupported signature algorithm %v", alg.Algorithm)
}

// hashes are the signature algorithms CreateCertificate picks for the key
// types the key manager offers.
var hashes = []struct {
	oid  asn1.ObjectIdentifier
	hash crypto.Hash
}{
	{asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}, crypto.SHA256},   // ecdsa-with-SHA256
	{asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}, crypto.SHA384},   // ecdsa-with-SHA384
	{asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}, crypto.SHA512},   // ecdsa-with-SHA512
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}, crypto.SHA256}, // sha256WithRSAEncryption
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}, crypto.SHA384}, // sha384WithRSAEncryption
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}, crypto.SHA512}, // sha512WithRSAEncryption
}
