// Package keymanager defines where the server keeps its signing keys: the
// KeyManager interface the CA consumes, the key types SPIRE names in its
// configuration, and helpers shared by the software implementations (memory,
// disk). Keys are handed out as crypto.Signer so that a hardware-backed
// implementation never has to export private key material.
package keymanager

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
)

// ErrNotFound is returned (wrapped) by GetKey when no key has the given ID.
var ErrNotFound = errors.New("keymanager: key not found")

// KeyType is the algorithm and size of a key. The zero value is ECP256, the
// default SPIRE uses for both CA and JWT keys.
type KeyType int

// Key types, named as in SPIRE's configuration (ca_key_type, jwt_key_type).
const (
	ECP256 KeyType = iota
	ECP384
	RSA2048
	RSA4096
)

// KeyTypes lists every supported key type, for tests and validation loops.
var KeyTypes = []KeyType{ECP256, ECP384, RSA2048, RSA4096}

// String returns SPIRE's configuration name for the key type.
func (t KeyType) String() string {
	switch t {
	case ECP256:
		return "ec-p256"
	case ECP384:
		return "ec-p384"
	case RSA2048:
		return "rsa-2048"
	case RSA4096:
		return "rsa-4096"
	default:
		return fmt.Sprintf("KeyType(%d)", int(t))
	}
}

// Valid reports whether t is one of the supported key types.
func (t KeyType) Valid() bool { return t >= ECP256 && t <= RSA4096 }

// ParseKeyType parses SPIRE's key type names ("ec-p256", "ec-p384",
// "rsa-2048", "rsa-4096").
func ParseKeyType(s string) (KeyType, error) {
	for _, t := range KeyTypes {
		if t.String() == s {
			return t, nil
		}
	}
	return 0, fmt.Errorf("keymanager: unknown key type %q (want ec-p256, ec-p384, rsa-2048 or rsa-4096)", s)
}

// KeyTypeOf returns the key type of a public key, or an error when the key
// is of no supported type. Implementations use it to check that what a
// backend hands back is what was asked for.
func KeyTypeOf(pub crypto.PublicKey) (KeyType, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return ECP256, nil
		case elliptic.P384():
			return ECP384, nil
		}
		return 0, fmt.Errorf("keymanager: unsupported curve %s", k.Curve.Params().Name)
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 2048:
			return RSA2048, nil
		case 4096:
			return RSA4096, nil
		}
		return 0, fmt.Errorf("keymanager: unsupported RSA size %d", k.N.BitLen())
	default:
		return 0, fmt.Errorf("keymanager: unsupported public key type %T", pub)
	}
}

// KeyManager creates and holds named signing keys. Implementations are safe
// for concurrent use.
type KeyManager interface {
	// GenerateKey creates a key of type t under id, replacing any key that
	// already has that id: the CA reuses its slot IDs on every rotation.
	GenerateKey(ctx context.Context, id string, t KeyType) (Key, error)
	// GetKey returns the key with the given id, or an error wrapping
	// ErrNotFound.
	GetKey(ctx context.Context, id string) (Key, error)
	// GetKeys returns every key held.
	GetKeys(ctx context.Context) ([]Key, error)
}

// Key is a signing key held by a KeyManager. Its private part may never
// leave the manager; signing goes through crypto.Signer.
type Key interface {
	crypto.Signer
	ID() string
	Type() KeyType
}

// GenerateSigner creates a software private key of type t. It serves the
// implementations that keep keys in process memory (memory, disk).
func GenerateSigner(t KeyType) (crypto.Signer, error) {
	switch t {
	case ECP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case RSA4096:
		return rsa.GenerateKey(rand.Reader, 4096)
	default:
		return nil, fmt.Errorf("keymanager: unsupported key type %s", t)
	}
}

// CheckID rejects key IDs no implementation should store: an empty ID would
// collide with "no key" in most backends.
func CheckID(id string) error {
	if id == "" {
		return errors.New("keymanager: empty key id")
	}
	return nil
}
