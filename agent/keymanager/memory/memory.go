// Package memory is a KeyManager that keeps keys only in process memory: a
// restarted agent has lost its key and must attest again. Use it where the
// node attestor can re-attest, or in tests.
package memory

import (
	"context"
	"crypto"
	"errors"
	"sync"

	"github.com/spiffe-hw/spire-hw/agent/keymanager"
)

// KeyManager keeps the agent key in memory.
type KeyManager struct {
	mu  sync.Mutex
	key crypto.Signer
}

var _ keymanager.KeyManager = (*KeyManager)(nil)

// New returns an empty in-memory KeyManager.
func New() *KeyManager { return &KeyManager{} }

// GenerateKey returns a new ECDSA P-256 key.
func (*KeyManager) GenerateKey(context.Context) (crypto.Signer, error) {
	return keymanager.GenerateECKey()
}

// SetAgentKey replaces the agent key.
func (m *KeyManager) SetAgentKey(_ context.Context, key crypto.Signer) error {
	if key == nil {
		return errors.New("memory: nil agent key")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.key = key
	return nil
}

// AgentKey returns the agent key or keymanager.ErrNoAgentKey.
func (m *KeyManager) AgentKey(context.Context) (crypto.Signer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.key == nil {
		return nil, keymanager.ErrNoAgentKey
	}
	return m.key, nil
}
