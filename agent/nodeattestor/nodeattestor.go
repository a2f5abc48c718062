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
	// csr is the DER CSR of the agent SVID sent in the same request: a
	// method whose evidence binds the agent's key (a TPM quote) binds
	// this one and fails without it; the others ignore it. It is an
	// argument, not a value of ctx, so no caller can leave it out
	// unnoticed.
	AttestationData(ctx context.Context, csr []byte) ([]byte, error)
	// Respond answers one server challenge. Methods without challenges
	// return an error, which aborts the attestation.
	Respond(ctx context.Context, challenge []byte) ([]byte, error)
}
