// Package nodeattestor defines the agent side of node attestation: the
// evidence an agent sends in the AttestAgent stream and its answers to the
// server's challenges. Each attestation method is a subpackage.
package nodeattestor

import "context"

// Attestor produces the evidence of one attestation method.
type Attestor interface {
	// Type is the attestation type the server's verifier is registered
	// under (e.g. "join_token").
	Type() string
	// AttestationData is the payload of the first AttestAgent request.
	AttestationData(ctx context.Context) ([]byte, error)
	// Respond answers one server challenge. Methods without challenges
	// return an error, which aborts the attestation.
	Respond(ctx context.Context, challenge []byte) ([]byte, error)
}

type csrKey struct{}

// WithCSR attaches the DER CSR of the attestation in progress to ctx, so an
// attestor whose evidence binds the agent's key (a TPM quote) can include
// it. The client sets it before asking for AttestationData.
func WithCSR(ctx context.Context, csr []byte) context.Context {
	return context.WithValue(ctx, csrKey{}, csr)
}

// CSRFromContext returns the CSR attached by WithCSR.
func CSRFromContext(ctx context.Context) ([]byte, bool) {
	b, ok := ctx.Value(csrKey{}).([]byte)
	return b, ok && len(b) > 0
}
