package api

import (
	"context"
	"crypto/x509"
	"fmt"
)

// parseCSR parses a DER CSR from the network and checks its signature, so
// the requester has proven possession of the key it wants certified. An
// invalid CSR goes to the security log with the API that received it and
// the caller (at most once per source and interval: any caller can send
// them).
func (a *API) parseCallerCSR(ctx context.Context, api string, der []byte) (*x509.CertificateRequest, error) {
	csr, err := parseCSR(der)
	if err != nil {
		a.sec.refused("csr", sourceKey(ctx)+" "+api, "Invalid CSR refused",
			"api", api, "caller_id", callerName(ctx), "caller_addr", peerAddr(ctx), "reason", err.Error())
	}
	return csr, err
}

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
