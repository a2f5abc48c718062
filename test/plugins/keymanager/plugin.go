package main

import (
	"context"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/spiffe-hw/spire-hw/test/plugins/internal/fault"
	"github.com/spiffe-hw/spire-hw/test/plugins/internal/memkeys"
	keymanagerv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/keymanager/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// config is the plugin's HCL configuration: only the fault keys for now.
type config struct{}

// Plugin is the key manager. Use New.
type Plugin struct {
	keymanagerv1.UnimplementedKeyManagerServer
	configv1.UnimplementedConfigServer

	log  hclog.Logger
	keys *memkeys.Store

	mu     sync.RWMutex
	faults fault.Faults
}

// New returns an unconfigured key manager with no keys.
func New() *Plugin {
	return &Plugin{log: hclog.NewNullLogger(), keys: memkeys.New()}
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
// replaced, and so gets a new fingerprint.
func (p *Plugin) GenerateKey(_ context.Context, req *keymanagerv1.GenerateKeyRequest) (*keymanagerv1.GenerateKeyResponse, error) {
	k, err := p.keys.Generate(req.GetKeyId(), memkeys.Type(req.GetKeyType()))
	if err != nil {
		return nil, err
	}
	p.log.Debug("Generated key", "key_id", req.GetKeyId(), "key_type", req.GetKeyType().String())
	return &keymanagerv1.GenerateKeyResponse{PublicKey: wire(k)}, nil
}

// GetPublicKey implements the KeyManager service. An unknown ID gets an empty
// response, not an error: see the command's documentation.
func (p *Plugin) GetPublicKey(_ context.Context, req *keymanagerv1.GetPublicKeyRequest) (*keymanagerv1.GetPublicKeyResponse, error) {
	k, ok, err := p.keys.Public(req.GetKeyId())
	if err != nil {
		return nil, err
	}
	if !ok {
		return &keymanagerv1.GetPublicKeyResponse{}, nil
	}
	return &keymanagerv1.GetPublicKeyResponse{PublicKey: wire(k)}, nil
}

// GetPublicKeys implements the KeyManager service, in key ID order.
func (p *Plugin) GetPublicKeys(context.Context, *keymanagerv1.GetPublicKeysRequest) (*keymanagerv1.GetPublicKeysResponse, error) {
	resp := &keymanagerv1.GetPublicKeysResponse{}
	for _, k := range p.keys.Keys() {
		resp.PublicKeys = append(resp.PublicKeys, wire(k))
	}
	return resp, nil
}

// SignData implements the KeyManager service. Data is the digest, as
// crypto.Signer wants it; the options say which hash made it, or PSS.
func (p *Plugin) SignData(_ context.Context, req *keymanagerv1.SignDataRequest) (*keymanagerv1.SignDataResponse, error) {
	p.mu.RLock()
	faults := p.faults
	p.mu.RUnlock()
	faults.Serve()

	if err := memkeys.CheckID(req.GetKeyId()); err != nil {
		return nil, err
	}
	var (
		hash    keymanagerv1.HashAlgorithm
		pssSalt *int32
	)
	switch o := req.GetSignerOpts().(type) {
	case *keymanagerv1.SignDataRequest_HashAlgorithm:
		hash = o.HashAlgorithm
	case *keymanagerv1.SignDataRequest_PssOptions:
		if o.PssOptions == nil {
			return nil, status.Error(codes.InvalidArgument, "PSS options are nil")
		}
		salt := o.PssOptions.GetSaltLength()
		hash, pssSalt = o.PssOptions.GetHashAlgorithm(), &salt
	default:
		return nil, status.Error(codes.InvalidArgument, "signer opts is required")
	}
	sig, fingerprint, err := p.keys.Sign(req.GetKeyId(), req.GetData(), int32(hash), pssSalt)
	if err != nil {
		return nil, err
	}
	return &keymanagerv1.SignDataResponse{Signature: sig, KeyFingerprint: fingerprint}, nil
}

// wire is k as the KeyManager service sends it.
func wire(k memkeys.Key) *keymanagerv1.PublicKey {
	return &keymanagerv1.PublicKey{Id: k.ID, Type: keymanagerv1.KeyType(k.Type), PkixData: k.PKIX, Fingerprint: k.Fingerprint}
}
