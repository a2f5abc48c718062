package external

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"io"
	"math"
	"time"

	keymanagerv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/keymanager/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/plugin/facade"
	"github.com/spiffe-hw/spire-hw/server/keymanager"
)

// rpcTimeout bounds every call to the plugin, as SPIRE's facade does. Sign
// has no context of its own (crypto.Signer), so without a bound a hung
// plugin would hang the CA.
const rpcTimeout = 30 * time.Second

// KeyManager is a keymanager.KeyManager backed by an external plugin.
type KeyManager struct {
	client keymanagerv1.KeyManagerClient
	f      facade.Facade
}

var _ keymanager.KeyManager = (*KeyManager)(nil)

// New adapts the KeyManager plugin reachable over conn; name is the
// plugin's name in the configuration, used in error messages.
func New(conn grpc.ClientConnInterface, name string) keymanager.KeyManager {
	return &KeyManager{client: keymanagerv1.NewKeyManagerClient(conn), f: facade.Facade{Type: "keymanager", Name: name}}
}

// GenerateKey asks the plugin for a new key of type t under id.
func (km *KeyManager) GenerateKey(ctx context.Context, id string, t keymanager.KeyType) (keymanager.Key, error) {
	if err := keymanager.CheckID(id); err != nil {
		return nil, km.f.Errorf(codes.InvalidArgument, "%v", err)
	}
	kt, err := km.keyType(t)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := km.client.GenerateKey(ctx, &keymanagerv1.GenerateKeyRequest{KeyId: id, KeyType: kt})
	if err != nil {
		return nil, km.f.WrapErr(err)
	}
	k, err := km.makeKey(id, resp.GetPublicKey())
	if err != nil {
		return nil, err
	}
	if k.typ != t {
		// The CA picks signature algorithms by key type: a key of another
		// type would sign certificates it then mislabels.
		return nil, km.f.Errorf(codes.Internal, "plugin generated a %s key for key %q, want %s", k.typ, id, t)
	}
	return k, nil
}

// GetKey returns the key with the given id, or an error wrapping
// keymanager.ErrNotFound.
func (km *KeyManager) GetKey(ctx context.Context, id string) (keymanager.Key, error) {
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := km.client.GetPublicKey(ctx, &keymanagerv1.GetPublicKeyRequest{KeyId: id})
	switch {
	case status.Code(err) == codes.NotFound:
		// SPIRE's own plugins say NotFound this way; others answer with
		// an empty response (below). Both mean the same to the CA.
		return nil, notFound(km.f.WrapErr(err))
	case err != nil:
		return nil, km.f.WrapErr(err)
	case resp.GetPublicKey() == nil:
		return nil, notFound(km.f.Errorf(codes.NotFound, "key %q not found", id))
	}
	return km.makeKey(id, resp.GetPublicKey())
}

// GetKeys returns every key the plugin holds.
func (km *KeyManager) GetKeys(ctx context.Context) ([]keymanager.Key, error) {
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := km.client.GetPublicKeys(ctx, &keymanagerv1.GetPublicKeysRequest{})
	if err != nil {
		return nil, km.f.WrapErr(err)
	}
	keys := make([]keymanager.Key, 0, len(resp.GetPublicKeys()))
	for _, pb := range resp.GetPublicKeys() {
		k, err := km.makeKey(pb.GetId(), pb)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func (km *KeyManager) keyType(t keymanager.KeyType) (keymanagerv1.KeyType, error) {
	switch t {
	case keymanager.ECP256:
		return keymanagerv1.KeyType_EC_P256, nil
	case keymanager.ECP384:
		return keymanagerv1.KeyType_EC_P384, nil
	case keymanager.RSA2048:
		return keymanagerv1.KeyType_RSA_2048, nil
	case keymanager.RSA4096:
		return keymanagerv1.KeyType_RSA_4096, nil
	default:
		return keymanagerv1.KeyType_UNSPECIFIED_KEY_TYPE, km.f.Errorf(codes.Internal, "facade does not support key type %q", t)
	}
}

func (km *KeyManager) makeKey(id string, pb *keymanagerv1.PublicKey) (*key, error) {
	switch {
	case pb == nil:
		return nil, km.f.Errorf(codes.Internal, "plugin response empty for key %q", id)
	case pb.GetId() != id:
		return nil, km.f.Errorf(codes.Internal, "plugin response has unexpected key id %q for key %q", pb.GetId(), id)
	case id == "":
		return nil, km.f.Errorf(codes.Internal, "plugin response has a key without an id")
	case len(pb.GetPkixData()) == 0:
		return nil, km.f.Errorf(codes.Internal, "plugin response missing public key PKIX data for key %q", id)
	}
	pub, err := x509.ParsePKIXPublicKey(pb.GetPkixData())
	if err != nil {
		return nil, km.f.Errorf(codes.Internal, "unable to parse public key PKIX data for key %q: %v", id, err)
	}
	t, err := keymanager.KeyTypeOf(pub)
	if err != nil {
		return nil, km.f.Errorf(codes.Internal, "key %q: %v", id, err)
	}
	return &key{km: km, id: id, typ: t, fingerprint: pb.GetFingerprint(), pub: pub}, nil
}

// key is a keymanager.Key whose private part stays in the plugin.
type key struct {
	km          *KeyManager
	id          string
	typ         keymanager.KeyType
	fingerprint string
	pub         crypto.PublicKey
}

// ID returns the key's id in the plugin.
func (k *key) ID() string { return k.id }

// Type returns the key's type, derived from its public key.
func (k *key) Type() keymanager.KeyType { return k.typ }

// Public returns the public key the plugin reported.
func (k *key) Public() crypto.PublicKey { return k.pub }

func (k *key) hashAlgorithm(h crypto.Hash) keymanagerv1.HashAlgorithm {
	// The SDK's enum values are crypto.Hash's, by design.
	return keymanagerv1.HashAlgorithm(h)
}

// Sign has the plugin sign digest. rand is ignored: it cannot cross the
// plugin boundary, and crypto.Signer only says the signer may use it.
func (k *key) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	req := &keymanagerv1.SignDataRequest{KeyId: k.id, Data: digest}
	switch o := opts.(type) {
	case nil:
		return nil, status.Error(codes.InvalidArgument, "signer opts cannot be nil")
	case *rsa.PSSOptions:
		// The salt length goes as rsa.PSSOptions spells it, including
		// PSSSaltLengthAuto (0) and PSSSaltLengthEqualsHash (-1): the
		// plugin builds the same rsa.PSSOptions from it.
		if o.SaltLength < math.MinInt32 || o.SaltLength > math.MaxInt32 {
			return nil, k.km.f.Errorf(codes.InvalidArgument, "PSS salt length %d out of range", o.SaltLength)
		}
		req.SignerOpts = &keymanagerv1.SignDataRequest_PssOptions{PssOptions: &keymanagerv1.SignDataRequest_PSSOptions{
			SaltLength:    int32(o.SaltLength),
			HashAlgorithm: k.hashAlgorithm(o.Hash),
		}}
	default:
		req.SignerOpts = &keymanagerv1.SignDataRequest_HashAlgorithm{HashAlgorithm: k.hashAlgorithm(o.HashFunc())}
	}
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	resp, err := k.km.client.SignData(ctx, req)
	if err != nil {
		return nil, k.km.f.WrapErr(err)
	}
	if len(resp.GetSignature()) == 0 {
		return nil, k.km.f.Errorf(codes.Internal, "plugin returned empty signature data")
	}
	if resp.GetKeyFingerprint() != k.fingerprint {
		// The key under this id was replaced since this Key was handed
		// out: its signature would not verify with k.Public().
		return nil, k.km.f.Errorf(codes.Internal, "fingerprint %q on key %q does not match %q", k.fingerprint, k.id, resp.GetKeyFingerprint())
	}
	return resp.GetSignature(), nil
}

// notFoundError is a plugin's NotFound status that also matches
// keymanager.ErrNotFound, so the CA's errors.Is checks work unchanged.
type notFoundError struct{ err error }

func notFound(err error) error { return &notFoundError{err: err} }

// Error returns the plugin's message.
func (e *notFoundError) Error() string { return e.err.Error() }

// Unwrap lets errors.Is find both the status and keymanager.ErrNotFound.
func (e *notFoundError) Unwrap() []error { return []error{e.err, keymanager.ErrNotFound} }

// GRPCStatus keeps the plugin's status for callers that are gRPC handlers.
func (e *notFoundError) GRPCStatus() *status.Status {
	st, _ := status.FromError(e.err)
	return st
}
