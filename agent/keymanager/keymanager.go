// Package keymanager defines where the agent keeps its private keys: the key
// of its own X509-SVID (which must outlive a restart for the agent to reuse
// its SVID without attesting again) and the keys it generates for workload
// SVIDs. Implementations live in the memory and disk subpackages, matching
// SPIRE's agent KeyManager plugins of the same names.
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

// KeyManager holds the agent's keys.
type KeyManager interface {
	// GenerateKey returns a fresh ECDSA P-256 key. It is not stored; the
	// caller decides whether it becomes the agent key (SetAgentKey) or a
	// workload key, which the agent's SVID cache persists itself.
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
