package api

import (
	"crypto/x509"
	"fmt"
)

// parseCSR parses a DER CSR from the network and checks its signature, so
// the requester has proven possession of the key it wants certified.
func parseCSR(der []byte) (*x509.CertificateRequest, error) {
	if len(der) == 0 {
		return nil, fmt.Errorf("missing CSR")
	}
	if len(der) > MaxCSRSize {
		return nil, fmt.Errorf("CSR is %d bytes, at most %d allowed", len(der), MaxCSRSize)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("malformed CSR: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("invalid CSR signature: %v", err)
	}
	if len(csr.URIs) > 1 {
		return nil, fmt.Errorf("CSR has %d URI SANs, at most one allowed", len(csr.URIs))
	}
	return csr, nil
}
