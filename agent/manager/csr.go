package manager

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// newCSR returns a DER CSR for key. The server only takes the public key
// from it, but a workload CSR names its SPIFFE ID as the one URI SAN, as
// SPIRE's agent does, so that the request is self-describing in logs. The
// agent's own CSR carries no ID (zero id): the server assigns it.
func newCSR(key crypto.Signer, id spiffeid.ID) ([]byte, error) {
	tmpl := &x509.CertificateRequest{
		Subject: pkix.Name{Country: []string{"US"}, Organization: []string{"SPIRE"}},
	}
	if !id.IsZero() {
		tmpl.URIs = []*url.URL{id.URL()}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("manager: create CSR: %w", err)
	}
	return der, nil
}
