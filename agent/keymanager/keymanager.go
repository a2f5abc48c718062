// Package keymanager defines where the agent keeps its private key: the key
// of its own X509-SVID, which must outlive a restart for the agent to reuse
// its SVID without attesting again. Implementations live in the memory and
// disk subpackages, matching SPIRE's agent KeyManager plugins of the same
// names, and in external, for SPIRE plugin SDK KeyManager plugins.
package keymanager

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
)

// ErrNoAgentKey is returned by AgentKey when no agent key has been stored.
var ErrNoAgentKey = errors.New("keymanager: no agent key")

// ErrAgentKeyNotHere is wrapped by AgentKey when an agent key is stored but
// cannot be used on this node: KeyManager "tpm"'s blob was made by another
// TPM (a copied data_dir, a cloned disk image) or by this one before its
// owner hierarchy was cleared. This node cannot prove that it is the agent
// the stored SVID names, so nothing cached under that SVID is its to serve.
var ErrAgentKeyNotHere = errors.New("keymanager: the stored agent key cannot be used on this node")

// KeyManager holds the agent's own key. Workload keys are not its business
// (as in SPIRE): they leave the agent, so the agent makes them in memory with
// GenerateECKey.
type KeyManager interface {
	// GenerateKey returns a fresh ECDSA P-256 key that may become the agent
	// key. It is not the agent key until SetAgentKey; a key manager backed
	// by a plugin may reuse a candidate's slot for the next candidate.
	GenerateKey(ctx context.Context) (crypto.Signer, error)
	// SetAgentKey makes key the key of the agent's X509-SVID. Call it only
	// once the SVID for the key has been obtained, so that a crash never
	// leaves a stored key without a certificate.
	SetAgentKey(ctx context.Context, key crypto.Signer) error
	// AgentKey returns the stored agent key, or ErrNoAgentKey.
	AgentKey(ctx context.Context) (crypto.Signer, error)
}

// GenerateECKey returns a new ECDSA P-256 key, the only key type the agent
// uses for SVIDs (SPIRE's default, accepted by every SPIFFE implementation).
func GenerateECKey() (crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("keymanager: generate key: %w", err)
	}
	return key, nil
}
