package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	_ "crypto/sha3" // SHA3 hashes are valid signing options; link them in.
	"crypto/x509"
	"encoding/hex"
	"sort"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/spiffe-hw/spire-hw/test/plugins/internal/fault"
	keymanagerv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/keymanager/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// config is the plugin's HCL configuration: only the fault keys for now.
type config struct{}

// entry is one key instance.
type entry struct {
	signer crypto.Signer
	public *keymanagerv1.PublicKey
}

// Plugin is the key manager. Use New.
type Plugin struct {
	keymanagerv1.UnimplementedKeyManagerServer
	configv1.UnimplementedConfigServer

	log hclog.Logger

	mu     sync.RWMutex
	faults fault.Faults
	keys   map[string]entry
}

// New returns an unconfigured key manager with no keys.
func New() *Plugin {
	return &Plugin{log: hclog.NewNullLogger(), keys: map[string]entry{}}
}

// SetLogger implements pluginsdk.NeedsLogger.
func (p *Plugin) SetLogger(log hclog.Logger) {
	p.log = log
}

// Configure implements the Config service. Keys survive a reconfiguration.
func (p *Plugin) Configure(_ context.Context, req *configv1.ConfigureRequest) (*configv1.ConfigureResponse, error) {
	var cfg config
	faults, err := fault.Configure(req, &cfg)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.faults = faults
	p.mu.Unlock()
	p.log.Info("Configured", "hang", faults.Hang, "crash", faults.Crash)
	return &configv1.ConfigureResponse{}, nil
}

// GenerateKey implements the KeyManager service; a key with the same ID is
// replaced, and so gets a new fingerprint. The agent relies on that: it
// generates a renewed SVID key into the slot the current key does not hold.
func (p *Plugin) GenerateKey(_ context.Context, req *keymanagerv1.GenerateKeyRequest) (*keymanagerv1.GenerateKeyResponse, error) {
	if req.GetKeyId() == "" {
		return nil, status.Error(codes.InvalidArgument, "key id is required")
	}
	signer, err := generate(req.GetKeyType())
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "marshal public key: %v", err)
	}
	sum := sha256.Sum256(der)
	e := entry{signer: signer, public: &keymanagerv1.PublicKey{
		Id:          req.GetKeyId(),
		Type:        req.GetKeyType(),
		PkixData:    der,
		Fingerprint: hex.EncodeToString(sum[:]),
	}}
	p.mu.Lock()
	p.keys[req.GetKeyId()] = e
	p.mu.Unlock()
	p.log.Debug("Generated key", "key_id", req.GetKeyId(), "key_type", req.GetKeyType().String())
	return &keymanagerv1.GenerateKeyResponse{PublicKey: clone(e.public)}, nil
}

// GetPublicKey implements the KeyManager service. An unknown ID gets an empty
// response, not an error: see the command's documentation.
func (p *Plugin) GetPublicKey(_ context.Context, req *keymanagerv1.GetPublicKeyRequest) (*keymanagerv1.GetPublicKeyResponse, error) {
	if req.GetKeyId() == "" {
		return nil, status.Error(codes.InvalidArgument, "key id is required")
	}
	p.mu.RLock()
	e, ok := p.keys[req.GetKeyId()]
	p.mu.RUnlock()
	if !ok {
		return &keymanagerv1.GetPublicKeyResponse{}, nil
	}
	return &keymanagerv1.GetPublicKeyResponse{PublicKey: clone(e.public)}, nil
}

// GetPublicKeys implements the KeyManager service, in key ID order.
func (p *Plugin) GetPublicKeys(context.Context, *keymanagerv1.GetPublicKeysRequest) (*keymanagerv1.GetPublicKeysResponse, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	resp := &keymanagerv1.GetPublicKeysResponse{}
	for _, e := range p.keys {
		resp.PublicKeys = append(resp.PublicKeys, clone(e.public))
	}
	sort.Slice(resp.PublicKeys, func(i, j int) bool { return resp.PublicKeys[i].Id < resp.PublicKeys[j].Id })
	return resp, nil
}

// SignData implements the KeyManager service. Data is the digest, as
// crypto.Signer wants it; the options say which hash made it, or PSS.
func (p *Plugin) SignData(_ context.Context, req *keymanagerv1.SignDataRequest) (*keymanagerv1.SignDataResponse, error) {
	p.mu.RLock()
	faults := p.faults
	p.mu.RUnlock()
	faults.Serve()

	if req.GetKeyId() == "" {
		return nil, status.Error(codes.InvalidArgument, "key id is required")
	}
	var opts crypto.SignerOpts
	var pss bool
	switch o := req.GetSignerOpts().(type) {
	case *keymanagerv1.SignDataRequest_HashAlgorithm:
		h, err := hashOf(o.HashAlgorithm)
		if err != nil {
			return nil, err
		}
		opts = h
	case *keymanagerv1.SignDataRequest_PssOptions:
		if o.PssOptions == nil {
			return nil, status.Error(codes.InvalidArgument, "PSS options are nil")
		}
		h, err := hashOf(o.PssOptions.GetHashAlgorithm())
		if err != nil {
			return nil, err
		}
		opts, pss = &rsa.PSSOptions{SaltLength: int(o.PssOptions.GetSaltLength()), Hash: h}, true
	default:
		return nil, status.Error(codes.InvalidArgument, "signer opts is required")
	}

	p.mu.RLock()
	e, ok := p.keys[req.GetKeyId()]
	p.mu.RUnlock()
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no such key %q", req.GetKeyId())
	}
	if _, isRSA := e.signer.(*rsa.PrivateKey); pss && !isRSA {
		return nil, status.Errorf(codes.InvalidArgument, "PSS options are only valid for RSA keys; key %q is %s", req.GetKeyId(), e.public.Type)
	}
	if len(req.GetData()) != opts.HashFunc().Size() {
		return nil, status.Errorf(codes.InvalidArgument, "data is %d bytes, not a %s digest", len(req.GetData()), opts.HashFunc())
	}
	sig, err := e.signer.Sign(rand.Reader, req.GetData(), opts)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "sign with key %q: %v", req.GetKeyId(), err)
	}
	return &keymanagerv1.SignDataResponse{Signature: sig, KeyFingerprint: e.public.Fingerprint}, nil
}

// hashOf maps the wire hash to crypto.Hash; the wire values are those of
// crypto.Hash by design.
func hashOf(h keymanagerv1.HashAlgorithm) (crypto.Hash, error) {
	if h == keymanagerv1.HashAlgorithm_UNSPECIFIED_HASH_ALGORITHM {
		return 0, status.Error(codes.InvalidArgument, "hash algorithm is required")
	}
	if _, known := keymanagerv1.HashAlgorithm_name[int32(h)]; !known || !crypto.Hash(h).Available() {
		return 0, status.Errorf(codes.InvalidArgument, "unsupported hash algorithm %d", h)
	}
	return crypto.Hash(h), nil
}

func generate(t keymanagerv1.KeyType) (crypto.Signer, error) {
	var (
		s   crypto.Signer
		err error
	)
	switch t {
	case keymanagerv1.KeyType_EC_P256:
		s, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case keymanagerv1.KeyType_EC_P384:
		s, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case keymanagerv1.KeyType_RSA_2048:
		s, err = rsa.GenerateKey(rand.Reader, 2048)
	case keymanagerv1.KeyType_RSA_4096:
		s, err = rsa.GenerateKey(rand.Reader, 4096)
	default:
		return nil, status.Errorf(codes.InvalidArgument, "unsupported key type %s", t)
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "generate %s key: %v", t, err)
	}
	return s, nil
}

func clone(k *keymanagerv1.PublicKey) *keymanagerv1.PublicKey {
	return proto.Clone(k).(*keymanagerv1.PublicKey)
}
