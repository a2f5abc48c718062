package external_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	upstreamauthorityv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/upstreamauthority/v1"
	plugintypes "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/internal/grpctest"
	"github.com/spiffe-hw/spire-hw/server/ca"
	"github.com/spiffe-hw/spire-hw/server/ca/upstream/external"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe-hw/spire-hw/server/keymanager/memory"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// plugin is an UpstreamAuthority with a real root CA. Like SPIRE's
// plugins it keeps each stream open after the first response, to push
// updates; it records when the adapter ends a stream.
type plugin struct {
	upstreamauthorityv1.UnimplementedUpstreamAuthorityServer

	root    *x509.Certificate
	rootKey *ecdsa.PrivateKey
	ownJWT  *plugintypes.JWTKey

	// tamperMint edits the first mint response; failWith fails the call.
	tamperMint func(*upstreamauthorityv1.MintX509CAResponse)
	tamperJWT  func(*upstreamauthorityv1.PublishJWTKeyResponse)
	failWith   error
	closeEOF   bool

	mu        sync.Mutex
	ttls      []int32
	published []*plugintypes.JWTKey
	ended     chan struct{} // closed by the first stream the adapter ends
	endOnce   sync.Once
}

func newPlugin(t *testing.T) *plugin {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "upstream root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	jwtKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(jwtKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	return &plugin{
		root: root, rootKey: key,
		ownJWT: &plugintypes.JWTKey{KeyId: "upstream-key", PublicKey: pub, ExpiresAt: time.Now().Add(48 * time.Hour).Unix()},
		ended:  make(chan struct{}),
	}
}

func (p *plugin) MintX509CAAndSubscribe(req *upstreamauthorityv1.MintX509CARequest, stream upstreamauthorityv1.UpstreamAuthority_MintX509CAAndSubscribeServer) error {
	if p.failWith != nil {
		return p.failWith
	}
	if p.closeEOF {
		return nil
	}
	p.mu.Lock()
	p.ttls = append(p.ttls, req.PreferredTtl)
	p.mu.Unlock()
	csr, err := x509.ParseCertificateRequest(req.Csr)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "bad CSR: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return status.Errorf(codes.InvalidArgument, "CSR signature: %v", err)
	}
	now := time.Now()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), Subject: csr.Subject, URIs: csr.URIs,
		NotBefore: now.Add(-10 * time.Second), NotAfter: now.Add(time.Duration(req.PreferredTtl) * time.Second),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, p.root, csr.PublicKey, p.rootKey)
	if err != nil {
		return status.Errorf(codes.Internal, "sign: %v", err)
	}
	resp := &upstreamauthorityv1.MintX509CAResponse{
		X509CaChain:       []*plugintypes.X509Certificate{{Asn1: der}},
		UpstreamX509Roots: []*plugintypes.X509Certificate{{Asn1: p.root.Raw}},
	}
	if p.tamperMint != nil {
		p.tamperMint(resp)
	}
	if err := stream.Send(resp); err != nil {
		return err
	}
	return p.subscribe(stream.Context())
}

func (p *plugin) PublishJWTKeyAndSubscribe(req *upstreamauthorityv1.PublishJWTKeyRequest, stream upstreamauthorityv1.UpstreamAuthority_PublishJWTKeyAndSubscribeServer) error {
	if p.failWith != nil {
		return p.failWith
	}
	p.mu.Lock()
	p.published = append(p.published, req.JwtKey)
	resp := &upstreamauthorityv1.PublishJWTKeyResponse{UpstreamJwtKeys: append([]*plugintypes.JWTKey{p.ownJWT}, p.published...)}
	p.mu.Unlock()
	if p.tamperJWT != nil {
		p.tamperJWT(resp)
	}
	if err := stream.Send(resp); err != nil {
		return err
	}
	return p.subscribe(stream.Context())
}

// subscribe holds the stream open, as a plugin streaming updates does,
// until the adapter ends it.
func (p *plugin) subscribe(ctx context.Context) error {
	<-ctx.Done()
	p.endOnce.Do(func() { close(p.ended) })
	return ctx.Err()
}

// noJWT is an UpstreamAuthority that cannot publish JWT keys.
type noJWT struct{ *plugin }

func (noJWT) PublishJWTKeyAndSubscribe(*upstreamauthorityv1.PublishJWTKeyRequest, upstreamauthorityv1.UpstreamAuthority_PublishJWTKeyAndSubscribeServer) error {
	return status.Error(codes.Unimplemented, "method PublishJWTKeyAndSubscribe not implemented")
}

func connect(t *testing.T, srvImpl upstreamauthorityv1.UpstreamAuthorityServer) *external.Authority {
	t.Helper()
	conn := grpctest.Serve(t, func(srv *grpc.Server) { upstreamauthorityv1.RegisterUpstreamAuthorityServer(srv, srvImpl) })
	return external.New(conn, "test")
}

func testCSR(t *testing.T) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{Organization: []string{"SPIFFE"}}, URIs: []*url.URL{td.ID().URL()},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

func TestMintX509CA(t *testing.T) {
	p := newPlugin(t)
	a := connect(t, p)
	csr, key := testCSR(t)
	chain, roots, err := a.MintX509CA(context.Background(), csr, 90*time.Minute)
	if err != nil {
		t.Fatalf("MintX509CA: %v", err)
	}
	if len(chain) != 1 || len(roots) != 1 || !roots[0].Equal(p.root) {
		t.Fatalf("chain %d, roots %d: want the minted CA and the plugin's root", len(chain), len(roots))
	}
	if !chain[0].PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Fatal("minted CA is not for the CSR's key")
	}
	if err := chain[0].CheckSignatureFrom(p.root); err != nil {
		t.Fatal(err)
	}
	// The interface is one-shot: the adapter must end the subscription.
	<-p.ended
	p.mu.Lock()
	ttls := p.ttls
	p.mu.Unlock()
	if len(ttls) != 1 || ttls[0] != 5400 {
		t.Fatalf("preferred TTL sent = %v, want [5400] seconds", ttls)
	}
}

func TestMintX509CARefusals(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   func(*plugin)
		code    codes.Code
		message string
	}{
		{
			name: "missing chain",
			setup: func(p *plugin) {
				p.tamperMint = func(r *upstreamauthorityv1.MintX509CAResponse) { r.X509CaChain = nil }
			},
			code: codes.Internal, message: "plugin response missing X.509 CA chain",
		},
		{
			name: "malformed chain",
			setup: func(p *plugin) {
				p.tamperMint = func(r *upstreamauthorityv1.MintX509CAResponse) { r.X509CaChain[0].Asn1 = []byte("junk") }
			},
			code: codes.Internal, message: "plugin response has malformed X.509 CA chain",
		},
		{
			name: "empty certificate in chain",
			setup: func(p *plugin) {
				p.tamperMint = func(r *upstreamauthorityv1.MintX509CAResponse) { r.X509CaChain[0].Asn1 = nil }
			},
			code: codes.Internal, message: "missing X.509 certificate data",
		},
		{
			name: "missing roots",
			setup: func(p *plugin) {
				p.tamperMint = func(r *upstreamauthorityv1.MintX509CAResponse) { r.UpstreamX509Roots = nil }
			},
			code: codes.Internal, message: "plugin response missing upstream X.509 roots",
		},
		{
			name: "malformed roots",
			setup: func(p *plugin) {
				p.tamperMint = func(r *upstreamauthorityv1.MintX509CAResponse) { r.UpstreamX509Roots[0].Asn1 = []byte("junk") }
			},
			code: codes.Internal, message: "plugin response has malformed upstream X.509 roots",
		},
		{
			name:  "plugin error keeps its code",
			setup: func(p *plugin) { p.failWith = status.Error(codes.PermissionDenied, "CSR not allowed") },
			code:  codes.PermissionDenied, message: "upstreamauthority(test): CSR not allowed",
		},
		{
			name:  "stream closed without answer",
			setup: func(p *plugin) { p.closeEOF = true },
			code:  codes.Internal, message: "upstreamauthority(test): plugin closed stream unexpectedly",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPlugin(t)
			tc.setup(p)
			a := connect(t, p)
			csr, _ := testCSR(t)
			_, _, err := a.MintX509CA(context.Background(), csr, time.Hour)
			checkErr(t, err, tc.code, tc.message)
		})
	}
}

func TestPublishJWTKey(t *testing.T) {
	p := newPlugin(t)
	a := connect(t, p)
	mine := jwtKey(t, "mine")
	keys, err := a.PublishJWTKey(context.Background(), mine)
	if err != nil {
		t.Fatalf("PublishJWTKey: %v", err)
	}
	if len(keys) != 2 || keys[0].KeyId != "upstream-key" || keys[1].KeyId != "mine" || string(keys[1].PublicKey) != string(mine.PublicKey) || keys[1].ExpiresAt != mine.ExpiresAt {
		t.Fatalf("upstream keys = %v", keys)
	}
	<-p.ended
	p.mu.Lock()
	got := p.published
	p.mu.Unlock()
	if len(got) != 1 || got[0].KeyId != "mine" {
		t.Fatalf("plugin received %v", got)
	}
}

func TestPublishJWTKeyRefusals(t *testing.T) {
	t.Run("unimplemented", func(t *testing.T) {
		a := connect(t, noJWT{newPlugin(t)})
		_, err := a.PublishJWTKey(context.Background(), jwtKey(t, "mine"))
		if !errors.Is(err, errors.ErrUnsupported) {
			t.Fatalf("PublishJWTKey = %v, want errors.ErrUnsupported", err)
		}
		checkErr(t, err, codes.Unimplemented, "upstreamauthority(test): ")
	})
	t.Run("bad key in answer", func(t *testing.T) {
		p := newPlugin(t)
		p.tamperJWT = func(r *upstreamauthorityv1.PublishJWTKeyResponse) { r.UpstreamJwtKeys[0].PublicKey = []byte("junk") }
		_, err := connect(t, p).PublishJWTKey(context.Background(), jwtKey(t, "mine"))
		checkErr(t, err, codes.Internal, "invalid plugin response: failed to unmarshal public key")
	})
	t.Run("key without id in answer", func(t *testing.T) {
		p := newPlugin(t)
		p.tamperJWT = func(r *upstreamauthorityv1.PublishJWTKeyResponse) { r.UpstreamJwtKeys[0].KeyId = "" }
		_, err := connect(t, p).PublishJWTKey(context.Background(), jwtKey(t, "mine"))
		checkErr(t, err, codes.Internal, "missing key ID for JWT key")
	})
	t.Run("invalid key to publish", func(t *testing.T) {
		_, err := connect(t, newPlugin(t)).PublishJWTKey(context.Background(), &types.JWTKey{KeyId: "x"})
		checkErr(t, err, codes.InvalidArgument, `missing public key for JWT key "x"`)
	})
	t.Run("plugin error keeps its code", func(t *testing.T) {
		p := newPlugin(t)
		p.failWith = status.Error(codes.Unavailable, "upstream server down")
		_, err := connect(t, p).PublishJWTKey(context.Background(), jwtKey(t, "mine"))
		checkErr(t, err, codes.Unavailable, "upstream server down")
		if errors.Is(err, errors.ErrUnsupported) {
			t.Fatal("an outage reads as unsupported")
		}
	})
}

// TestCAWithExternalUpstream runs the real CA manager on the adapter and a
// real SQLite datastore: its CA chains to the plugin's root, and the bundle
// holds the JWT keys the plugin answered with.
func TestCAWithExternalUpstream(t *testing.T) {
	ctx := context.Background()
	p := newPlugin(t)
	store := sqlitetest.Open(t)
	m, err := ca.New(ctx, ca.Config{
		TrustDomain: td,
		KeyManager:  memory.New(),
		Upstream:    connect(t, p),
		Store:       store,
		CATTL:       6 * time.Hour,
		X509SVIDTTL: 30 * time.Minute,
		JWTSVIDTTL:  5 * time.Minute,
	})
	if err != nil {
		t.Fatalf("ca.New: %v", err)
	}
	b, err := store.FetchBundle(ctx, td.Name())
	if err != nil {
		t.Fatal(err)
	}
	if len(b.X509Authorities) != 1 || string(b.X509Authorities[0].Asn1) != string(p.root.Raw) {
		t.Fatal("bundle does not hold the plugin's root alone")
	}
	kids := map[string]bool{}
	for _, k := range b.JwtAuthorities {
		kids[k.KeyId] = true
	}
	if len(kids) != 2 || !kids["upstream-key"] || !kids[m.JWTKeyID()] {
		t.Fatalf("bundle JWT keys = %v, want the upstream's and ours", kids)
	}
	leaf, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromPath(td, "/workload")
	certs, err := m.SignX509SVID(ctx, ca.X509SVIDParams{SPIFFEID: id, PublicKey: leaf.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := x509svid.Verify(certs, x509bundle.FromX509Authorities(td, []*x509.Certificate{p.root})); err != nil || got != id {
		t.Fatalf("SVID does not verify to the plugin's root: %v", err)
	}
}

func jwtKey(t *testing.T, kid string) *types.JWTKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return &types.JWTKey{KeyId: kid, PublicKey: pub, ExpiresAt: time.Now().Add(time.Hour).Unix()}
}

func checkErr(t *testing.T, err error, code codes.Code, contains string) {
	t.Helper()
	st, ok := status.FromError(err)
	if err == nil || !ok || st.Code() != code || !strings.Contains(st.Message(), contains) || !strings.HasPrefix(st.Message(), "upstreamauthority(test): ") {
		t.Fatalf("error = %v, want %s containing %q with the plugin prefix", err, code, contains)
	}
}
