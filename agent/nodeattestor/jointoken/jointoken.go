// Package jointoken attests an agent with a one-time join token created by
// an operator (`spire-server token generate`). A token can be used once, so
// an agent attested this way cannot re-attest: it must keep its SVID (and
// key) across restarts.
package jointoken

import (
	"context"
	"errors"

	"github.com/spiffe-hw/spire-hw/agent/nodeattestor"
)

// Type is the attestation type of join tokens.
const Type = "join_token"

// Attestor sends a join token.
type Attestor struct {
	token string
}

var _ nodeattestor.Attestor = (*Attestor)(nil)

// New returns an Attestor that presents token.
func New(token string) *Attestor { return &Attestor{token: token} }

// Type returns "join_token".
func (*Attestor) Type() string { return Type }

// AttestationData returns the token bytes.
func (a *Attestor) AttestationData(context.Context, []byte) ([]byte, error) {
	if a.token == "" {
		return nil, errors.New("jointoken: no join token configured")
	}
	return []byte(a.token), nil
}

// Respond always fails: the join token method has no challenge.
func (*Attestor) Respond(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("jointoken: unexpected challenge from server")
}
