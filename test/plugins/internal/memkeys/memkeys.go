// Package memkeys holds the private keys of the test KeyManager plugins in
// memory, by key ID, as SPIRE's memory key managers do. The server and the
// agent KeyManager services are alike but are generated into two proto
// packages; this package is the key logic both plugins share, and each
// plugin only maps its own proto messages onto it.
//
// Key types and hash algorithms are given by their wire numbers, which are
// the same in both protos (and a hash's number is its crypto.Hash). A key's
// public half is PKIX DER, and its fingerprint is the hex SHA-256 of that
// DER, as SPIRE's base key manager computes it. Errors are gRPC statuses,
// since the plugins return them to the host as they are.
package memkeys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	_ "crypto/sha3" // SHA3 hashes are valid signing options; link them in.
	"crypto/x509"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Type is a key type by its KeyType number in the SDK's keymanager protos.
type Type int32

// The key types the plugins generate.
const (
	ECP256  Type = 1
	ECP384  Type = 2
	RSA2048 Type = 3
	RSA4096 Type = 4
)

// String is the proto's name for t, or its number if it has none, as the
// proto enum's String says it.
func (t Type) String() string {
	switch t {
	case 0:
		return "UNSPECIFIED_KEY_TYPE"
	case ECP256:
		return "EC_P256"
	case ECP384:
		return "EC_P384"
	case RSA2048:
		return "RSA_2048"
	case RSA4096:
		return "RSA_4096"
	}
	return strconv.Itoa(int(t))
}

// hashes are the HashAlgorithm numbers the protos define (other than
// UNSPECIFIED): each is the crypto.Hash of the same number.
var hashes = []crypto.Hash{
	crypto.SHA224, crypto.SHA256, crypto.SHA384, crypto.SHA512,
	crypto.SHA3_224, crypto.SHA3_256, crypto.SHA3_384, crypto.SHA3_512,
	crypto.SHA512_224, crypto.SHA512_256,
}

// Key is the public half of a key, as GetPublicKey reports it.
type Key struct {
	ID          string
	Type        Type
	PKIX        []byte
	Fingerprint string
}

// entry is one key instance.
type entry struct {
	signer crypto.Signer
	public Key
}

func (e entry) publicCopy() Key {
	k := e.public
	k.PKIX = slices.Clone(k.PKIX)
	return k
}

// Store holds keys by ID. It is safe for concurrent use. Use New.
type Store struct {
	mu   sync.RWMutex
	keys map[string]entry
}

// New returns a store with no keys.
func New() *Store {
	return &Store{keys: map[string]entry{}}
}

// errNoID answers a request without a key ID.
var errNoID = status.Error(codes.InvalidArgument, "key id is required")

// CheckID refuses an empty key ID. Generate, Public and Sign check it
// themselves; a plugin calls it when the ID must be checked before the rest
// of its request.
func CheckID(id string) error {
	if id == "" {
		return errNoID
	}
	return nil
}

// Generate makes a new key of type t under id. A key with the same ID is
// replaced, and so gets a new fingerprint.
func (s *Store) Generate(id string, t Type) (Key, error) {
	if err := CheckID(id); err != nil {
		return Key{}, err
	}
	signer, err := generate(t)
	if err != nil {
		return Key{}, err
	}
	der, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return Key{}, status.Errorf(codes.Internal, "marshal public key: %v", err)
	}
	e := entry{signer: signer, public: Key{ID: id, Type: t, PKIX: der, Fingerprint: Fingerprint(der)}}
	s.mu.Lock()
	s.keys[id] = e
	s.mu.Unlock()
	return e.publicCopy(), nil
}

// Public returns the public half of the key under id, and false if there is
// none.
func (s *Store) Public(id string) (Key, bool, error) {
	if err := CheckID(id); err != nil {
		return Key{}, false, err
	}
	s.mu.RLock()
	e, ok := s.keys[id]
	s.mu.RUnlock()
	if !ok {
		return Key{}, false, nil
	}
	return e.publicCopy(), true, nil
}

// Keys returns the public half of every key, in key ID order.
func (s *Store) Keys() []Key {
	s.mu.RLock()
	defer s.mu.RUnlock()
	keys := make([]Key, 0, len(s.keys))
	for _, e := range s.keys {
		keys = append(keys, e.publicCopy())
	}
	slices.SortFunc(keys, func(a, b Key) int { return strings.Compare(a.ID, b.ID) })
	return keys
}

// Sign signs digest, made with the hash of wire number hash, with the key
// under id; pssSalt, if not nil, asks for RSA-PSS with that salt length
// (which may be rsa.PSSSaltLengthAuto or rsa.PSSSaltLengthEqualsHash). It
// returns the signature and the fingerprint of the key that made it.
func (s *Store) Sign(id string, digest []byte, hash int32, pssSalt *int32) (sig []byte, fingerprint string, err error) {
	if err := CheckID(id); err != nil {
		return nil, "", err
	}
	h, err := hashOf(hash)
	if err != nil {
		return nil, "", err
	}
	var opts crypto.SignerOpts = h
	if pssSalt != nil {
		opts = &rsa.PSSOptions{SaltLength: int(*pssSalt), Hash: h}
	}

	s.mu.RLock()
	e, ok := s.keys[id]
	s.mu.RUnlock()
	if !ok {
		return nil, "", status.Errorf(codes.NotFound, "no such key %q", id)
	}
	if _, isRSA := e.signer.(*rsa.PrivateKey); pssSalt != nil && !isRSA {
		return nil, "", status.Errorf(codes.InvalidArgument, "PSS options are only valid for RSA keys; key %q is %s", id, e.public.Type)
	}
	if len(digest) != h.Size() {
		return nil, "", status.Errorf(codes.InvalidArgument, "data is %d bytes, not a %s digest", len(digest), h)
	}
	sig, err = e.signer.Sign(rand.Reader, digest, opts)
	if err != nil {
		return nil, "", status.Errorf(codes.Internal, "sign with key %q: %v", id, err)
	}
	return sig, e.public.Fingerprint, nil
}

// Fingerprint is the hex SHA-256 of a PKIX public key, as SPIRE computes a
// key's fingerprint.
func Fingerprint(pkix []byte) string {
	sum := sha256.Sum256(pkix)
	return hex.EncodeToString(sum[:])
}

// hashOf maps the wire hash to crypto.Hash; the wire values are those of
// crypto.Hash by design.
func hashOf(n int32) (crypto.Hash, error) {
	if n == 0 {
		return 0, status.Error(codes.InvalidArgument, "hash algorithm is required")
	}
	h := crypto.Hash(n)
	if !slices.Contains(hashes, h) || !h.Available() {
		return 0, status.Errorf(codes.InvalidArgument, "unsupported hash algorithm %d", n)
	}
	return h, nil
}

func generate(t Type) (crypto.Signer, error) {
	var (
		s   crypto.Signer
		err error
	)
	switch t {
	case ECP256:
		s, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECP384:
		s, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case RSA2048:
		s, err = rsa.GenerateKey(rand.Reader, 2048)
	case RSA4096:
		s, err = rsa.GenerateKey(rand.Reader, 4096)
	default:
		return nil, status.Errorf(codes.InvalidArgument, "unsupported key type %s", t)
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "generate %s key: %v", t, err)
	}
	return s, nil
}
