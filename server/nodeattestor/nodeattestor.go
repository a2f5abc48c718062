// Package nodeattestor defines how the server verifies an agent's evidence
// during AttestAgent. Each attestor lives in a subpackage (jointoken, and
// later tpm, x509pop and the cloud attestors) and implements Attestor.
package nodeattestor

import (
	"context"
	"crypto/x509"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// Result is what a successful attestation establishes about a node.
type Result struct {
	AgentID   spiffeid.ID
	Selectors []*types.Selector
	// CanReattest says the node can prove itself again (TPM, cloud), so it
	// may renew by re-attesting; join tokens cannot.
	CanReattest bool
	// JoinToken is a single-use token the attestation rests on. The
	// caller must spend it in the write that records the node
	// (datastore.AttestedNode.SpendJoinToken) and refuse the attestation
	// if that write finds it spent: until then the token still attests.
	JoinToken string
}

// ChallengeFunc sends a challenge to the agent over the attestation stream
// and returns its response.
type ChallengeFunc func(ctx context.Context, challenge []byte) ([]byte, error)

// Attestor verifies one kind of attestation data. Errors that are gRPC
// statuses are returned to the agent as they are; others become
// PermissionDenied, since a failed attestation is a refusal.
type Attestor interface {
	// Type is the attestation data type the attestor handles ("join_token").
	Type() string
	// Attest verifies payload, sending challenges through challenge, and
	// names the node. csr is the agent's CSR from the same AttestAgent
	// request: the key the server is about to certify. It is a parameter,
	// not a field of an options value or of ctx, so that no caller can
	// leave it out by omission: evidence that binds a key (a TPM quote)
	// must be checked against this CSR and refused without it, while
	// methods whose evidence binds no key ignore it.
	Attest(ctx context.Context, payload []byte, csr *x509.CertificateRequest, challenge ChallengeFunc) (*Result, error)
}
