// Package memory is a KeyManager that keeps keys in process memory only.
// Keys vanish when the process exits, so every restart rotates the CA; use it
// for tests and for deployments that accept that (SPIRE's "memory" plugin).
package memory

import (
	"context"
	"crypto"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/spiffe-hw/spire-hw/server/keymanager"
)

// KeyManager holds keys in a map. The zero value is not usable; call New.
type KeyManager struct {
	mu   sync.RWMutex
	keys map[string]*key
}

var _ keymanager.KeyManager = (*KeyManager)(nil)

// New returns an empty in-memory key manager.
func New() *KeyManager {
	return &KeyManager{keys: make(map[string]*key)}
}

// GenerateKey creates a key under id, replacing any existing one.
func (m *KeyManager) GenerateKey(ctx context.Context, id string, t keymanager.KeyType) (keymanager.Key, error) {
	if err := keymanager.CheckID(id); err != nil {
		return nil, fmt.Errorf("memory: generate key: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory: generate key %q: %w", id, err)
	}
	s, err := keymanager.GenerateSigner(t)
	if err != nil {
		return nil, fmt.Errorf("memory: generate key %q: %w", id, err)
	}
	k := &key{id: id, typ: t, signer: s}
	m.mu.Lock()
	m.keys[id] = k
	m.mu.Unlock()
	return k, nil
}

// GetKey returns the key with the given id.
func (m *KeyManager) GetKey(_ context.Context, id string) (keymanager.Key, error) {
	m.mu.RLock()
	k, ok := m.keys[id]
	m.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("memory: key %q: %w", id, keymanager.ErrNotFound)
	}
	return k, nil
}

// GetKeys returns every key, sorted by ID.
func (m *KeyManager) GetKeys(context.Context) ([]keymanager.Key, error) {
	m.mu.RLock()
	out := make([]keymanager.Key, 0, len(m.keys))
	for _, k := range m.keys {
		out = append(out, k)
	}
	m.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID() < out[j].ID() })
	return out, nil
}

type key struct {
	id     string
	typ    keymanager.KeyType
	signer crypto.Signer
}

func (k *key) ID() string               { return k.id }
func (k *key) Type() keymanager.KeyType { return k.typ }
func (k *key) Public() crypto.PublicKey { return k.signer.Public() }

// InProcess tells the CA that this key signs with Go's own crypto in this
// process, so the signature need not be verified again (ca.InProcessKey).
func (k *key) InProcess() bool { return true }
func (k *key) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.signer.Sign(r, digest, opts)
}
