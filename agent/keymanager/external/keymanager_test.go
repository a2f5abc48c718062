package external_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"sync"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/keymanager"
	"github.com/spiffe-hw/spire-hw/agent/keymanager/external"
	"github.com/spiffe-hw/spire-hw/agent/keymanager/keymanagertest"
	"github.com/spiffe-hw/spire-hw/internal/grpctest"
	keymanagerv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/keymanager/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// plugin is an SDK agent KeyManager holding real ECDSA keys in memory; its
// fields make it misbehave in the ways SPIRE's facade checks for.
type plugin struct {
	keymanagerv1.UnimplementedKeyManagerServer

	mu   sync.Mutex
	keys map[string]*ecdsa.PrivateKey
	// lastHash is the hash algorithm of the last SignData request.
	lastHash keymanagerv1.HashAlgorithm

	fail           error  // every call fails with it
	generateP384   bool   // GenerateKey makes a P-384 key
	wrongID        bool   // responses name another key
	noPKIX         bool   // responses lack the PKIX data
	badPKIX        bool   // responses carry garbage PKIX data
	emptySignature bool   // SignData returns no signature
	fingerprint    string // SignData returns this fingerprint if set
}

func newPlugin() *plugin { return &plugin{keys: map[string]*ecdsa.PrivateKey{}} }

func fingerprint(pkixData []byte) string {
	sum := sha256.Sum256(pkixData)
	return hex.EncodeToString(sum[:])
}

func (p *plugin) publicKey(id string, key *ecdsa.PrivateKey) (*keymanagerv1.PublicKey, error) {
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	pb := &keymanagerv1.PublicKey{Id: id, Type: keymanagerv1.KeyType_EC_P256, PkixData: der, Fingerprint: fingerprint(der)}
	switch {
	case p.wrongID:
		pb.Id = "other"
	case p.noPKIX:
		pb.PkixData = nil
	case p.badPKIX:
		pb.PkixData = []byte("garbage")
	}
	return pb, nil
}

func (p *plugin) GenerateKey(_ context.Context, req *keymanagerv1.GenerateKeyRequest) (*keymanagerv1.GenerateKeyResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return nil, p.fail
	}
	if req.KeyType != keymanagerv1.KeyType_EC_P256 {
		return nil, status.Errorf(codes.InvalidArgument, "unsupported key type %v", req.KeyType)
	}
	curve := elliptic.P256()
	if p.generateP384 {
		curve = elliptic.P384()
	}
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	p.keys[req.KeyId] = key
	pb, err := p.publicKey(req.KeyId, key)
	return &keymanagerv1.GenerateKeyResponse{PublicKey: pb}, err
}

func (p *plugin) GetPublicKey(_ context.Context, req *keymanagerv1.GetPublicKeyRequest) (*keymanagerv1.GetPublicKeyResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return nil, p.fail
	}
	key, ok := p.keys[req.KeyId]
	if !ok {
		return &keymanagerv1.GetPublicKeyResponse{}, nil
	}
	pb, err := p.publicKey(req.KeyId, key)
	return &keymanagerv1.GetPublicKeyResponse{PublicKey: pb}, err
}

func (p *plugin) GetPublicKeys(context.Context, *keymanagerv1.GetPublicKeysRequest) (*keymanagerv1.GetPublicKeysResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return nil, p.fail
	}
	resp := &keymanagerv1.GetPublicKeysResponse{}
	for id, key := range p.keys {
		pb, err := p.publicKey(id, key)
		if err != nil {
			return nil, err
		}
		resp.PublicKeys = append(resp.PublicKeys, pb)
	}
	return resp, nil
}

func (p *plugin) SignData(_ context.Context, req *keymanagerv1.SignDataRequest) (*keymanagerv1.SignDataResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return nil, p.fail
	}
	key, ok := p.keys[req.KeyId]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no such key %q", req.KeyId)
	}
	p.lastHash = req.GetHashAlgorithm()
	if p.lastHash == keymanagerv1.HashAlgorithm_UNSPECIFIED_HASH_ALGORITHM {
		return nil, status.Error(codes.InvalidArgument, "hash algorithm is required")
	}
	sig, err := ecdsa.SignASN1(rand.Reader, key, req.Data)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	der, _ := x509.MarshalPKIXPublicKey(key.Public())
	resp := &keymanagerv1.SignDataResponse{Signature: sig, KeyFingerprint: fingerprint(der)}
	if p.emptySignature {
		resp.Signature = nil
	}
	if p.fingerprint != "" {
		resp.KeyFingerprint = p.fingerprint
	}
	return resp, nil
}

func (p *plugin) set(f func(p *plugin)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

// held returns the public key the plugin holds under id.
func (p *plugin) held(id string) crypto.PublicKey {
	p.mu.Lock()
	defer p.mu.Unlock()
	if k, ok := p.keys[id]; ok {
		return k.Public()
	}
	return nil
}

// serve runs the plugin on a Unix socket; each call to the returned dial
// makes a new connection, as a restarted agent would.
func serve(t *testing.T, p *plugin) (dial func() grpc.ClientConnInterface) {
	t.Helper()
	sock := grpctest.Start(t, func(srv *grpc.Server) { keymanagerv1.RegisterKeyManagerServer(srv, p) })
	return func() grpc.ClientConnInterface { return grpctest.Dial(t, sock) }
}

func TestConformance(t *testing.T) {
	keymanagertest.Run(t, func(t *testing.T) keymanager.KeyManager {
		return external.New(serve(t, newPlugin())(), "fake")
	})
}

func idOf(t *testing.T, k crypto.Signer) string {
	t.Helper()
	ek, ok := k.(*external.Key)
	if !ok {
		t.Fatalf("key is %T, want *external.Key", k)
	}
	return ek.ID()
}

func equal(a, b crypto.PublicKey) bool {
	return a != nil && a.(*ecdsa.PublicKey).Equal(b)
}

// TestSlotsAlternate: renewals alternate between SPIRE's two key IDs, and a
// new key never lands in the slot of the agent key in use.
func TestSlotsAlternate(t *testing.T) {
	p := newPlugin()
	km := external.New(serve(t, p)(), "fake")
	ctx := context.Background()
	for i, want := range []string{external.KeyIDA, external.KeyIDB, external.KeyIDA, external.KeyIDB} {
		k, err := km.GenerateKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := idOf(t, k); got != want {
			t.Fatalf("renewal %d: key in %q, want %q", i, got, want)
		}
		if !equal(p.held(want), k.Public()) {
			t.Fatalf("renewal %d: plugin does not hold the key under %q", i, want)
		}
		if err := km.SetAgentKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	// A failed renewal retried: the candidate slot is reused, the agent key
	// stays.
	agent, _ := km.AgentKey(ctx)
	for range 2 {
		k, err := km.GenerateKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if idOf(t, k) == idOf(t, agent) {
			t.Fatal("candidate key generated over the agent key")
		}
	}
	if !equal(p.held(idOf(t, agent)), agent.Public()) {
		t.Fatal("agent key lost")
	}
}

// TestRestart: a new adapter over the same plugin (a restarted agent) finds
// the agent key the plugin holds.
func TestRestart(t *testing.T) {
	p := newPlugin()
	dial := serve(t, p)
	ctx := context.Background()
	km1 := external.New(dial(), "fake")
	if _, err := km1.AgentKey(ctx); !errors.Is(err, keymanager.ErrNoAgentKey) {
		t.Fatalf("empty plugin: AgentKey = %v, want ErrNoAgentKey", err)
	}
	k1, err := km1.GenerateKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := km1.SetAgentKey(ctx, k1); err != nil {
		t.Fatal(err)
	}

	km2 := external.New(dial(), "fake")
	got, err := km2.AgentKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !equal(got.Public(), k1.Public()) {
		t.Fatal("restarted AgentKey is not the agent key")
	}
	checkCSR(t, got)

	// After a renewal both slots hold keys; only the SVID's key decides.
	k2, err := km2.GenerateKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := km2.SetAgentKey(ctx, k2); err != nil {
		t.Fatal(err)
	}
	km3 := external.New(dial(), "fake")
	if _, err := km3.AgentKey(ctx); !errors.Is(err, keymanager.ErrNoAgentKey) {
		t.Fatalf("two candidates: AgentKey = %v, want ErrNoAgentKey", err)
	}
	for _, want := range []crypto.Signer{k2, k1} {
		got, err := km3.AgentKeyFor(ctx, want.Public())
		if err != nil {
			t.Fatal(err)
		}
		if idOf(t, got) != idOf(t, want) || !equal(got.Public(), want.Public()) {
			t.Fatalf("AgentKeyFor found %s, want %s", idOf(t, got), idOf(t, want))
		}
	}
	// k1 is now the agent key of km3, so its next key goes into k2's slot.
	next, err := km3.GenerateKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if idOf(t, next) != idOf(t, k2) {
		t.Fatalf("next key in %s, want %s", idOf(t, next), idOf(t, k2))
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := km3.AgentKeyFor(ctx, other.Public()); !errors.Is(err, keymanager.ErrNoAgentKey) {
		t.Fatalf("AgentKeyFor(unknown) = %v, want ErrNoAgentKey", err)
	}
}

// checkCSR uses the key as the agent does: to sign a CSR.
func checkCSR(t *testing.T, key crypto.Signer) {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "agent"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("CSR signed through the plugin does not verify: %v", err)
	}
}

func TestSignHash(t *testing.T) {
	p := newPlugin()
	km := external.New(serve(t, p)(), "fake")
	k, err := km.GenerateKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("x"))
	for _, tt := range []struct {
		opts crypto.SignerOpts
		want keymanagerv1.HashAlgorithm
	}{
		{crypto.SHA256, keymanagerv1.HashAlgorithm_SHA256},
		{crypto.SHA384, keymanagerv1.HashAlgorithm_SHA384},
		{crypto.SHA512, keymanagerv1.HashAlgorithm_SHA512},
	} {
		if _, err := k.Sign(rand.Reader, digest[:], tt.opts); err != nil {
			t.Fatal(err)
		}
		p.mu.Lock()
		got := p.lastHash
		p.mu.Unlock()
		if got != tt.want {
			t.Errorf("%v sent as %v, want %v", tt.opts, got, tt.want)
		}
	}
	if _, err := k.Sign(rand.Reader, digest[:], nil); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("nil opts: %v, want InvalidArgument", err)
	}
	// MD5 has no SDK value: the plugin gets UNSPECIFIED and refuses.
	if _, err := k.Sign(rand.Reader, digest[:16], crypto.MD5); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("MD5: %v, want InvalidArgument", err)
	}
}

// TestFacadeChecks: what the plugin returns is checked as SPIRE checks it.
func TestFacadeChecks(t *testing.T) {
	ctx := context.Background()
	// generate breaks the plugin, then asks for a key (in slot A: the
	// manager is fresh).
	generate := func(breakPlugin func(p *plugin)) func(*testing.T, *plugin, *external.KeyManager) error {
		return func(_ *testing.T, p *plugin, km *external.KeyManager) error {
			p.set(breakPlugin)
			_, err := km.GenerateKey(ctx)
			return err
		}
	}
	// sign makes a key, breaks the plugin, then signs with the key.
	sign := func(breakPlugin func(p *plugin)) func(*testing.T, *plugin, *external.KeyManager) error {
		return func(t *testing.T, p *plugin, km *external.KeyManager) error {
			k, err := km.GenerateKey(ctx)
			if err != nil {
				t.Fatal(err)
			}
			p.set(breakPlugin)
			digest := sha256.Sum256([]byte("x"))
			_, err = k.Sign(rand.Reader, digest[:], crypto.SHA256)
			return err
		}
	}
	tests := []struct {
		name     string
		op       func(*testing.T, *plugin, *external.KeyManager) error
		wantCode codes.Code
		wantMsg  string
	}{
		{
			name:     "plugin error keeps its code",
			op:       generate(func(p *plugin) { p.fail = status.Error(codes.Unavailable, "fake: kms down") }),
			wantCode: codes.Unavailable, wantMsg: "keymanager(fake): kms down",
		},
		{
			name:     "wrong key id",
			op:       generate(func(p *plugin) { p.wrongID = true }),
			wantCode: codes.Internal, wantMsg: `keymanager(fake): plugin response has unexpected key id "other" for key "agent-svid-A"`,
		},
		{
			name:     "missing PKIX data",
			op:       generate(func(p *plugin) { p.noPKIX = true }),
			wantCode: codes.Internal, wantMsg: `keymanager(fake): plugin response missing public key PKIX data for key "agent-svid-A"`,
		},
		{
			name:     "bad PKIX data",
			op:       generate(func(p *plugin) { p.badPKIX = true }),
			wantCode: codes.Internal,
		},
		{
			name:     "not P-256",
			op:       generate(func(p *plugin) { p.generateP384 = true }),
			wantCode: codes.Internal, wantMsg: `keymanager(fake): plugin generated a *ecdsa.PublicKey key for "agent-svid-A", want EC P-256`,
		},
		{
			name:     "empty signature",
			op:       sign(func(p *plugin) { p.emptySignature = true }),
			wantCode: codes.Internal, wantMsg: "keymanager(fake): plugin returned empty signature data",
		},
		{
			name:     "fingerprint mismatch",
			op:       sign(func(p *plugin) { p.fingerprint = "other" }),
			wantCode: codes.Internal,
		},
		{
			name:     "sign error keeps its code",
			op:       sign(func(p *plugin) { p.fail = status.Error(codes.PermissionDenied, "denied") }),
			wantCode: codes.PermissionDenied, wantMsg: "keymanager(fake): denied",
		},
		{
			name: "candidate replaced before it was set",
			op: func(t *testing.T, _ *plugin, km *external.KeyManager) error {
				agent, err := km.GenerateKey(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if err := km.SetAgentKey(ctx, agent); err != nil {
					t.Fatal(err)
				}
				// Two candidates for one free slot: the first is gone.
				first, err := km.GenerateKey(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := km.GenerateKey(ctx); err != nil {
					t.Fatal(err)
				}
				return km.SetAgentKey(ctx, first)
			},
			wantCode: codes.FailedPrecondition, wantMsg: `keymanager(fake): key "agent-svid-B" was replaced in the plugin after it was generated`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPlugin()
			km := external.New(serve(t, p)(), "fake")
			err := tt.op(t, p, km)
			st, ok := status.FromError(err)
			if !ok || st.Code() != tt.wantCode || (tt.wantMsg != "" && st.Message() != tt.wantMsg) {
				t.Fatalf("err = %v, want %v %q", err, tt.wantCode, tt.wantMsg)
			}
		})
	}
}

// A key from elsewhere cannot become the agent key: it is not in the plugin.
func TestSetForeignKey(t *testing.T) {
	km := external.New(serve(t, newPlugin())(), "fake")
	foreign, err := keymanager.GenerateECKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := km.SetAgentKey(context.Background(), foreign); err == nil {
		t.Fatal("SetAgentKey accepted an in-memory key")
	}
	other := external.New(serve(t, newPlugin())(), "other")
	k, err := other.GenerateKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := km.SetAgentKey(context.Background(), k); err == nil {
		t.Fatal("SetAgentKey accepted another plugin's key")
	}
}
