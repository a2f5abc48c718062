package external

import (
	"context"
	"crypto"
	"crypto/rsa"
	"io"
	"math"

	keymanagerv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/keymanager/v1"
	"google.golang.org/grpc/codes"
)

// Key is a key held by the plugin. It implements crypto.Signer by asking
// the plugin to sign.
type Key struct {
	km          *KeyManager
	id          string
	fingerprint string
	pub         crypto.PublicKey
}

// ID is the key's ID in the plugin ("agent-svid-A" or "agent-svid-B").
func (k *Key) ID() string { return k.id }

// Public returns the public key.
func (k *Key) Public() crypto.PublicKey { return k.pub }

// Sign asks the plugin to sign digest. rand is ignored: it cannot cross the
// plugin boundary, and crypto.Signer only says entropy "possibly" comes
// from it.
func (k *Key) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	req := &keymanagerv1.SignDataRequest{KeyId: k.id, Data: digest}
	switch opts := opts.(type) {
	case nil:
		// As SPIRE: refuse to guess a hash.
		return nil, k.km.f.Errorf(codes.InvalidArgument, "signer opts cannot be nil")
	case *rsa.PSSOptions:
		if opts.SaltLength > math.MaxInt32 || opts.SaltLength < math.MinInt32 {
			return nil, k.km.f.Errorf(codes.InvalidArgument, "PSS salt length %d out of range", opts.SaltLength)
		}
		req.SignerOpts = &keymanagerv1.SignDataRequest_PssOptions{PssOptions: &keymanagerv1.SignDataRequest_PSSOptions{
			SaltLength:    int32(opts.SaltLength),
			HashAlgorithm: hashAlgorithm(opts.Hash),
		}}
	default:
		req.SignerOpts = &keymanagerv1.SignDataRequest_HashAlgorithm{HashAlgorithm: hashAlgorithm(opts.HashFunc())}
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
	// A different fingerprint means the slot now holds another key: the
	// signature would not match Public().
	if resp.GetKeyFingerprint() != k.fingerprint {
		return nil, k.km.f.Errorf(codes.Internal, "fingerprint %q on key %q does not match %q", k.fingerprint, k.id, resp.GetKeyFingerprint())
	}
	return resp.GetSignature(), nil
}

// hashAlgorithm converts a crypto.Hash: the SDK's enum uses the same
// numbers. A hash the SDK does not know becomes UNSPECIFIED, which the
// plugin refuses.
func hashAlgorithm(h crypto.Hash) keymanagerv1.HashAlgorithm {
	a := keymanagerv1.HashAlgorithm(h)
	if _, ok := keymanagerv1.HashAlgorithm_name[int32(a)]; !ok || h > math.MaxInt32 {
		return keymanagerv1.HashAlgorithm_UNSPECIFIED_HASH_ALGORITHM
	}
	return a
}
