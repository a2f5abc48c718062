package x509pop

import (
	"errors"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// parseECDSASig splits an ASN.1 ECDSA signature, what a crypto.Signer
// (possibly an HSM) returns, into the r and s the wire format carries.
func parseECDSASig(der []byte) (r, s []byte, err error) {
	var inner cryptobyte.String
	in := cryptobyte.String(der)
	if !in.ReadASN1(&inner, asn1.SEQUENCE) || !in.Empty() ||
		!inner.ReadASN1Integer(&r) || !inner.ReadASN1Integer(&s) || !inner.Empty() {
		return nil, nil, errors.New("x509pop: malformed ECDSA signature")
	}
	return r, s, nil
}
