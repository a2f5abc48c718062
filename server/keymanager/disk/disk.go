// Package disk is a KeyManager that keeps software keys in one JSON file
// (SPIRE's "disk" KeyManager, plugin_data key keys_path), so that the CA
// keys survive a restart and the CA journal can reuse them.
//
// Every change rewrites the whole file atomically: a temporary file in the
// same directory is written, synced and renamed over the old one, and the
// directory is synced, so a crash leaves either the old or the new set of
// keys, never a torn file. The file is created with mode 0600.
package disk

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/spiffe-hw/spire-hw/server/keymanager"
)

// KeyManager persists keys in a JSON file. Safe for concurrent use within
// one process; two processes must not share a keys_path.
type KeyManager struct {
	path string

	mu   sync.RWMutex
	keys map[string]*key
}

var _ keymanager.KeyManager = (*KeyManager)(nil)

// fileFormat is the on-disk shape. Private keys are PKCS #8 DER (base64 by
// encoding/json), which holds every supported key type.
type fileFormat struct {
	Keys []fileKey `json:"keys"`
}

type fileKey struct {
	ID         string `json:"id"`
	Type       string `json:"type"`
	PrivateKey []byte `json:"private_key"`
}

// New opens the key file at keysPath, loading the keys it holds. A missing
// file is an empty key manager; it is created on the first GenerateKey.
func New(keysPath string) (*KeyManager, error) {
	if keysPath == "" {
		return nil, errors.New("disk: keys_path is required")
	}
	m := &KeyManager{path: keysPath, keys: make(map[string]*key)}
	data, err := os.ReadFile(keysPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return m, nil
	case err != nil:
		return nil, fmt.Errorf("disk: read %s: %w", keysPath, err)
	}
	var f fileFormat
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("disk: parse %s: %w", keysPath, err)
	}
	for _, fk := range f.Keys {
		k, err := decodeKey(fk)
		if err != nil {
			return nil, fmt.Errorf("disk: %s: %w", keysPath, err)
		}
		if _, dup := m.keys[k.id]; dup {
			return nil, fmt.Errorf("disk: %s: duplicate key id %q", keysPath, k.id)
		}
		m.keys[k.id] = k
	}
	return m, nil
}

func decodeKey(fk fileKey) (*key, error) {
	if err := keymanager.CheckID(fk.ID); err != nil {
		return nil, err
	}
	t, err := keymanager.ParseKeyType(fk.Type)
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", fk.ID, err)
	}
	priv, err := x509.ParsePKCS8PrivateKey(fk.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", fk.ID, err)
	}
	s, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key %q: %T is not a signer", fk.ID, priv)
	}
	got, err := keymanager.KeyTypeOf(s.Public())
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", fk.ID, err)
	}
	if got != t {
		return nil, fmt.Errorf("key %q: recorded as %s but is %s", fk.ID, t, got)
	}
	return &key{id: fk.ID, typ: t, signer: s, der: fk.PrivateKey}, nil
}

// GenerateKey creates a key under id, replacing any existing one, and
// returns only after the key file holding it is durable.
func (m *KeyManager) GenerateKey(ctx context.Context, id string, t keymanager.KeyType) (keymanager.Key, error) {
	if err := keymanager.CheckID(id); err != nil {
		return nil, fmt.Errorf("disk: generate key: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("disk: generate key %q: %w", id, err)
	}
	s, err := keymanager.GenerateSigner(t)
	if err != nil {
		return nil, fmt.Errorf("disk: generate key %q: %w", id, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(s)
	if err != nil {
		return nil, fmt.Errorf("disk: generate key %q: %w", id, err)
	}
	k := &key{id: id, typ: t, signer: s, der: der}

	m.mu.Lock()
	defer m.mu.Unlock()
	prev, had := m.keys[id]
	m.keys[id] = k
	if err := m.writeLocked(); err != nil {
		if had {
			m.keys[id] = prev
		} else {
			delete(m.keys, id)
		}
		return nil, fmt.Errorf("disk: generate key %q: %w", id, err)
	}
	return k, nil
}

// GetKey returns the key with the given id.
func (m *KeyManager) GetKey(_ context.Context, id string) (keymanager.Key, error) {
	m.mu.RLock()
	k, ok := m.keys[id]
	m.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("disk: key %q: %w", id, keymanager.ErrNotFound)
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

// writeLocked writes all keys to a temporary file, syncs it, renames it over
// the key file and syncs the directory so the rename itself is durable.
func (m *KeyManager) writeLocked() error {
	f := fileFormat{Keys: make([]fileKey, 0, len(m.keys))}
	for _, k := range m.keys {
		f.Keys = append(f.Keys, fileKey{ID: k.id, Type: k.typ.String(), PrivateKey: k.der})
	}
	sort.Slice(f.Keys, func(i, j int) bool { return f.Keys[i].ID < f.Keys[j].ID })
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}

	dir := filepath.Dir(m.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// CreateTemp opens with mode 0600, so the keys are never readable by
	// others, not even for the instant before the rename.
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(m.path)+".tmp-*")
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	committed := false
	defer func() {
		if !committed {
			_ = tmp.Close()
			_ = os.Remove(tmpName)
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmpName, m.path); err != nil {
		return err
	}
	committed = true
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

type key struct {
	id     string
	typ    keymanager.KeyType
	signer crypto.Signer
	der    []byte
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
