// Package disk is a KeyManager that persists the agent key in a directory
// (SPIRE's `KeyManager "disk" { plugin_data { directory = "..." } }`), so a
// restarted agent can keep using its X509-SVID without a new join token.
// The key file is PKCS#8 DER, mode 0600, replaced atomically.
package disk

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/spiffe-hw/spire-hw/agent/keymanager"
	"github.com/spiffe-hw/spire-hw/internal/daemondir"
)

// KeyFileName is the agent key's file name inside the directory.
const KeyFileName = "agent_svid.key"

// KeyManager stores the agent key in a directory.
type KeyManager struct {
	dir string

	mu  sync.Mutex
	key crypto.Signer
}

var _ keymanager.KeyManager = (*KeyManager)(nil)

// New returns a KeyManager that keeps its key in dir, creating dir (0700)
// if needed.
func New(dir string) (*KeyManager, error) {
	if dir == "" {
		return nil, errors.New("disk: directory is required")
	}
	if _, err := daemondir.Ensure(dir, 0o700); err != nil {
		return nil, fmt.Errorf("disk: key directory: %w", err)
	}
	return &KeyManager{dir: dir}, nil
}

// GenerateKey returns a new ECDSA P-256 key; it is not written to disk.
func (*KeyManager) GenerateKey(context.Context) (crypto.Signer, error) {
	return keymanager.GenerateECKey()
}

// SetAgentKey writes key to disk atomically and makes it the agent key.
func (m *KeyManager) SetAgentKey(_ context.Context, key crypto.Signer) error {
	if key == nil {
		return errors.New("disk: nil agent key")
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("disk: marshal agent key: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := WriteFileAtomic(filepath.Join(m.dir, KeyFileName), der); err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	m.key = key
	return nil
}

// AgentKey returns the agent key, reading it from disk on first use.
func (m *KeyManager) AgentKey(context.Context) (crypto.Signer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.key != nil {
		return m.key, nil
	}
	der, err := os.ReadFile(filepath.Join(m.dir, KeyFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, keymanager.ErrNoAgentKey
	}
	if err != nil {
		return nil, fmt.Errorf("disk: read agent key: %w", err)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("disk: parse agent key: %w", err)
	}
	signer, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("disk: agent key of type %T cannot sign", parsed)
	}
	m.key = signer
	return signer, nil
}

// WriteFileAtomic writes data to path with mode 0600 so that readers see the
// old or the new content, never a torn file: write a temporary file in the
// same directory, sync it, rename it over path, then sync the directory.
func WriteFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // no-op once renamed
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // best effort: some filesystems refuse fsync on directories
		d.Close()
	}
	return nil
}
