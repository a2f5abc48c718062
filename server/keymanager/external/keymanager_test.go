package external_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"

	keymanagerv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/keymanager/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/internal/grpctest"
	"github.com/spiffe-hw/spire-hw/server/keymanager"
	"github.com/spiffe-hw/spire-hw/server/keymanager/external"
	"github.com/spiffe-hw/spire-hw/server/keymanager/keymanagertest"
)

// plugin is an in-memory KeyManager plugin with real keys, served over a
// real gRPC connection; the knobs make it misbehave the ways the adapter
// must catch.
type plugin struct {
	keymanagerv1.UnimplementedKeyManagerServer

	// notFoundAsEmpty answers GetPublicKey for a missing key with an empty
	// response instead of a NotFound status (both occur in the wild).
	notFoundAsEmpty bool

	mu      sync.Mutex
	keys    map[string]*pluginKey
	lastReq *keymanagerv1.SignDataRequest
	// tamper, when set, edits each response before it is sent.
	tamperPub func(*keymanagerv1.PublicKey)
	tamperSig func(*keymanagerv1.SignDataResponse)
}

type pluginKey struct {
	signer crypto.Signer
	pb     *keymanagerv1.PublicKey
}

func (p *plugin) GenerateKey(_ context.Context, req *keymanagerv1.GenerateKeyRequest) (*keymanagerv1.GenerateKeyResponse, error) {
	if req.KeyId == "" {
		return nil, status.Error(codes.InvalidArgument, "key id is required")
	}
	var t keymanager.KeyType
	switch req.KeyType {
	case keymanagerv1.KeyType_EC_P256:
		t = keymanager.ECP256
	case keymanagerv1.KeyType_EC_P384:
		t = keymanager.ECP384
	case keymanagerv1.KeyType_RSA_2048:
		t = keymanager.RSA2048
	case keymanagerv1.KeyType_RSA_4096:
		t = keymanager.RSA4096
	default:
		return nil, status.Errorf(codes.InvalidArgument, "unsupported key type %s", req.KeyType)
	}
	s, err := keymanager.GenerateSigner(t)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	der, err := x509.MarshalPKIXPublicKey(s.Public())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	sum := sha256.Sum256(der)
	pb := &keymanagerv1.PublicKey{Id: req.KeyId, Type: req.KeyType, PkixData: der, Fingerprint: hex.EncodeToString(sum[:])}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.keys == nil {
		p.keys = map[string]*pluginKey{}
	}
	p.keys[req.KeyId] = &pluginKey{signer: s, pb: pb}
	return &keymanagerv1.GenerateKeyResponse{PublicKey: p.out(pb)}, nil
}

// out returns a copy of pb, tampered with when the test asks for it.
func (p *plugin) out(pb *keymanagerv1.PublicKey) *keymanagerv1.PublicKey {
	c := &keymanagerv1.PublicKey{Id: pb.Id, Type: pb.Type, PkixData: pb.PkixData, Fingerprint: pb.Fingerprint}
	if p.tamperPub != nil {
		p.tamperPub(c)
	}
	return c
}

func (p *plugin) GetPublicKey(_ context.Context, req *keymanagerv1.GetPublicKeyRequest) (*keymanagerv1.GetPublicKeyResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k, ok := p.keys[req.KeyId]
	switch {
	case !ok && p.notFoundAsEmpty:
		return &keymanagerv1.GetPublicKeyResponse{}, nil
	case !ok:
		return nil, status.Errorf(codes.NotFound, "no such key %q", req.KeyId)
	}
	return &keymanagerv1.GetPublicKeyResponse{PublicKey: p.out(k.pb)}, nil
}

func (p *plugin) GetPublicKeys(context.Context, *keymanagerv1.GetPublicKeysRequest) (*keymanagerv1.GetPublicKeysResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	resp := &keymanagerv1.GetPublicKeysResponse{}
	for _, k := range p.keys {
		resp.PublicKeys = append(resp.PublicKeys, p.out(k.pb))
	}
	return resp, nil
}

func (p *plugin) SignData(_ context.Context, req *keymanagerv1.SignDataRequest) (*keymanagerv1.SignDataResponse, error) {
	p.mu.Lock()
	k, ok := p.keys[req.KeyId]
	p.lastReq = req
	tamper := p.tamperSig
	p.mu.Unlock()
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no such key %q", req.KeyId)
	}
	var opts crypto.SignerOpts
	switch o := req.SignerOpts.(type) {
	case *keymanagerv1.SignDataRequest_HashAlgorithm:
		opts = crypto.Hash(o.HashAlgorithm)
	case *keymanagerv1.SignDataRequest_PssOptions:
		opts = &rsa.PSSOptions{SaltLength: int(o.PssOptions.SaltLength), Hash: crypto.Hash(o.PssOptions.HashAlgorithm)}
	default:
		return nil, status.Error(codes.InvalidArgument, "signer opts required")
	}
	if !opts.HashFunc().Available() {
		return nil, status.Errorf(codes.InvalidArgument, "hash algorithm %d unavailable", opts.HashFunc())
	}
	sig, err := k.signer.Sign(rand.Reader, req.Data, opts)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "sign: %v", err)
	}
	resp := &keymanagerv1.SignDataResponse{Signature: sig, KeyFingerprint: k.pb.Fingerprint}
	if tamper != nil {
		tamper(resp)
	}
	return resp, nil
}

// connect serves p on a Unix socket in a temporary directory and returns
// the adapter connected to it.
func connect(t *testing.T, p *plugin) keymanager.KeyManager {
	t.Helper()
	conn := grpctest.Serve(t, func(srv *grpc.Server) { keymanagerv1.RegisterKeyManagerServer(srv, p) })
	return external.New(conn, "test-km")
}

func TestConformance(t *testing.T) {
	keymanagertest.Run(t, func(t *testing.T) keymanager.KeyManager { return connect(t, &plugin{}) })
}

func TestConformanceNotFoundAsEmpty(t *testing.T) {
	keymanagertest.Run(t, func(t *testing.T) keymanager.KeyManager { return connect(t, &plugin{notFoundAsEmpty: true}) })
}

func TestNotFoundIsStatusToo(t *testing.T) {
	for _, empty := range []bool{false, true} {
		km := connect(t, &plugin{notFoundAsEmpty: empty})
		_, err := km.GetKey(context.Background(), "missing")
		if !errors.Is(err, keymanager.ErrNotFound) {
			t.Fatalf("empty=%v: GetKey = %v, want ErrNotFound", empty, err)
		}
		if st, _ := status.FromError(err); st.Code() != codes.NotFound || !strings.HasPrefix(st.Message(), "keymanager(test-km): ") {
			t.Fatalf("empty=%v: status = %v, want NotFound with the plugin prefix", empty, st)
		}
	}
}

// TestSignerOpts checks that each crypto.SignerOpts reaches the plugin as
// SPIRE's facade sends it and that the signature verifies with the options
// the caller asked for.
func TestSignerOpts(t *testing.T) {
	p := &plugin{}
	km := connect(t, p)
	ctx := context.Background()
	rsaKey, err := km.GenerateKey(ctx, "rsa", keymanager.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := km.GenerateKey(ctx, "ec", keymanager.ECP384)
	if err != nil {
		t.Fatal(err)
	}
	d256 := sha256.Sum256([]byte("message"))
	digest := d256[:]
	for _, tc := range []struct {
		name     string
		key      keymanager.Key
		opts     crypto.SignerOpts
		wantHash keymanagerv1.HashAlgorithm
		wantPSS  *keymanagerv1.SignDataRequest_PSSOptions
		verify   func(sig []byte) error
	}{
		{
			name: "pkcs1v15", key: rsaKey, opts: crypto.SHA256, wantHash: keymanagerv1.HashAlgorithm_SHA256,
			verify: func(sig []byte) error {
				return rsa.VerifyPKCS1v15(rsaKey.Public().(*rsa.PublicKey), crypto.SHA256, digest, sig)
			},
		},
		{
			name: "pss-equals-hash", key: rsaKey, opts: &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256},
			wantPSS: &keymanagerv1.SignDataRequest_PSSOptions{SaltLength: -1, HashAlgorithm: keymanagerv1.HashAlgorithm_SHA256},
			verify: func(sig []byte) error {
				// EqualsHash on verify demands exactly 32 bytes of salt.
				return rsa.VerifyPSS(rsaKey.Public().(*rsa.PublicKey), crypto.SHA256, digest, sig, &rsa.PSSOptions{SaltLength: 32})
			},
		},
		{
			name: "pss-auto", key: rsaKey, opts: &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256},
			wantPSS: &keymanagerv1.SignDataRequest_PSSOptions{SaltLength: 0, HashAlgorithm: keymanagerv1.HashAlgorithm_SHA256},
			verify: func(sig []byte) error {
				// Auto signs with the largest salt that fits: 256-2-32.
				return rsa.VerifyPSS(rsaKey.Public().(*rsa.PublicKey), crypto.SHA256, digest, sig, &rsa.PSSOptions{SaltLength: 222})
			},
		},
		{
			name: "pss-explicit", key: rsaKey, opts: &rsa.PSSOptions{SaltLength: 20, Hash: crypto.SHA256},
			wantPSS: &keymanagerv1.SignDataRequest_PSSOptions{SaltLength: 20, HashAlgorithm: keymanagerv1.HashAlgorithm_SHA256},
			verify: func(sig []byte) error {
				return rsa.VerifyPSS(rsaKey.Public().(*rsa.PublicKey), crypto.SHA256, digest, sig, &rsa.PSSOptions{SaltLength: 20})
			},
		},
		{
			name: "ecdsa", key: ecKey, opts: crypto.SHA256, wantHash: keymanagerv1.HashAlgorithm_SHA256,
			verify: func(sig []byte) error {
				if !ecdsa.VerifyASN1(ecKey.Public().(*ecdsa.PublicKey), digest, sig) {
					return errors.New("ECDSA signature does not verify")
				}
				return nil
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sig, err := tc.key.Sign(rand.Reader, digest, tc.opts)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			p.mu.Lock()
			req := p.lastReq
			p.mu.Unlock()
			if got := req.GetPssOptions(); tc.wantPSS != nil {
				if got == nil || got.SaltLength != tc.wantPSS.SaltLength || got.HashAlgorithm != tc.wantPSS.HashAlgorithm {
					t.Fatalf("PSS options sent = %v, want %v", got, tc.wantPSS)
				}
			} else if req.GetHashAlgorithm() != tc.wantHash || got != nil {
				t.Fatalf("request = %v, want hash %s", req, tc.wantHash)
			}
			if err := tc.verify(sig); err != nil {
				t.Fatal(err)
			}
		})
	}
	if _, err := rsaKey.Sign(rand.Reader, digest, nil); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Sign with nil opts = %v, want InvalidArgument", err)
	}
}

// TestBadPluginResponses: what a faulty plugin returns never becomes a key
// or a signature.
func TestBadPluginResponses(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		tamperPub func(*keymanagerv1.PublicKey)
		tamperSig func(*keymanagerv1.SignDataResponse)
		want      string
	}{
		{name: "wrong id", tamperPub: func(pb *keymanagerv1.PublicKey) { pb.Id = "other" }, want: `unexpected key id "other"`},
		{name: "no PKIX data", tamperPub: func(pb *keymanagerv1.PublicKey) { pb.PkixData = nil }, want: "missing public key PKIX data"},
		{name: "garbage PKIX data", tamperPub: func(pb *keymanagerv1.PublicKey) { pb.PkixData = []byte("junk") }, want: "unable to parse public key PKIX data"},
		{name: "empty signature", tamperSig: func(r *keymanagerv1.SignDataResponse) { r.Signature = nil }, want: "empty signature data"},
		{name: "other fingerprint", tamperSig: func(r *keymanagerv1.SignDataResponse) { r.KeyFingerprint = "x" }, want: "does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &plugin{tamperPub: tc.tamperPub, tamperSig: tc.tamperSig}
			km := connect(t, p)
			k, err := km.GenerateKey(ctx, "k", keymanager.ECP256)
			if tc.tamperPub != nil {
				checkErr(t, err, codes.Internal, tc.want)
				_, err = km.GetKey(ctx, "k")
				checkErr(t, err, codes.Internal, tc.want)
				if tc.name != "wrong id" { // GetKeys takes the id from the key itself
					_, err = km.GetKeys(ctx)
					checkErr(t, err, codes.Internal, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			d := sha256.Sum256([]byte("x"))
			_, err = k.Sign(rand.Reader, d[:], crypto.SHA256)
			checkErr(t, err, codes.Internal, tc.want)
		})
	}
}

// TestReplacedKeyRefusesToSign: a Key handed out before its id was
// regenerated must not sign with the new key, whose signature would not
// verify with the old public key.
func TestReplacedKeyRefusesToSign(t *testing.T) {
	ctx := context.Background()
	km := connect(t, &plugin{})
	old, err := km.GenerateKey(ctx, "slot", keymanager.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := km.GenerateKey(ctx, "slot", keymanager.ECP256); err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	_, err = old.Sign(rand.Reader, d[:], crypto.SHA256)
	checkErr(t, err, codes.Internal, "does not match")
}

func TestPluginErrorsKeepTheirCode(t *testing.T) {
	km := connect(t, &plugin{})
	_, err := km.GenerateKey(context.Background(), "k", keymanager.KeyType(99))
	checkErr(t, err, codes.Internal, "facade does not support key type")
	// An error from the plugin itself keeps its code and gains the prefix.
	d := sha256.Sum256([]byte("x"))
	k, err := km.GenerateKey(context.Background(), "k", keymanager.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	_, err = k.Sign(rand.Reader, d[:], crypto.Hash(99))
	checkErr(t, err, codes.InvalidArgument, "hash algorithm 99 unavailable")
}

func checkErr(t *testing.T, err error, code codes.Code, contains string) {
	t.Helper()
	st, ok := status.FromError(err)
	if err == nil || !ok || st.Code() != code || !strings.Contains(st.Message(), contains) || !strings.HasPrefix(st.Message(), "keymanager(test-km): ") {
		t.Fatalf("error = %v, want %s containing %q with the plugin prefix", err, code, contains)
	}
}
