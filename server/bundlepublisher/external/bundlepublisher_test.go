package external_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	bundlepublisherv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/bundlepublisher/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/spiffe-hw/spire-hw/server/bundlepublisher/external"
)

func testBundle(t *testing.T) *types.Bundle {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return &types.Bundle{
		TrustDomain:     "example.org",
		RefreshHint:     300,
		SequenceNumber:  7,
		X509Authorities: []*types.X509Certificate{{Asn1: der, Tainted: true}},
		JwtAuthorities:  []*types.JWTKey{{KeyId: "k1", PublicKey: pub, ExpiresAt: 1234, Tainted: true}},
	}
}

func TestToPluginBundle(t *testing.T) {
	b := testBundle(t)
	pb, err := external.ToPluginBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	if pb.TrustDomain != "example.org" || pb.RefreshHint != 300 || pb.SequenceNumber != 7 ||
		len(pb.X509Authorities) != 1 || string(pb.X509Authorities[0].Asn1) != string(b.X509Authorities[0].Asn1) || !pb.X509Authorities[0].Tainted ||
		len(pb.JwtAuthorities) != 1 || pb.JwtAuthorities[0].KeyId != "k1" || pb.JwtAuthorities[0].ExpiresAt != 1234 || !pb.JwtAuthorities[0].Tainted {
		t.Fatalf("converted bundle = %v", pb)
	}
	if pb, err := external.ToPluginBundle(nil); pb != nil || err != nil {
		t.Fatalf("nil bundle = %v, %v", pb, err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*types.Bundle)
		want   string
	}{
		{"bad trust domain", func(b *types.Bundle) { b.TrustDomain = "Not A Domain" }, "malformed trust domain"},
		{"empty certificate", func(b *types.Bundle) { b.X509Authorities[0].Asn1 = nil }, "missing X.509 certificate data"},
		{"garbage certificate", func(b *types.Bundle) { b.X509Authorities[0].Asn1 = []byte("x") }, "failed to parse X.509 certificate data"},
		{"key without id", func(b *types.Bundle) { b.JwtAuthorities[0].KeyId = "" }, "missing key ID"},
		{"key without public key", func(b *types.Bundle) { b.JwtAuthorities[0].PublicKey = nil }, "missing public key"},
		{"garbage public key", func(b *types.Bundle) { b.JwtAuthorities[0].PublicKey = []byte("x") }, "failed to unmarshal public key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := proto.Clone(testBundle(t)).(*types.Bundle)
			tc.mutate(b)
			if _, err := external.ToPluginBundle(b); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ToPluginBundle = %v, want %q", err, tc.want)
			}
		})
	}
}

type plugin struct {
	bundlepublisherv1.UnimplementedBundlePublisherServer
	got  chan *bundlepublisherv1.PublishBundleRequest
	fail error
}

func (p *plugin) PublishBundle(_ context.Context, req *bundlepublisherv1.PublishBundleRequest) (*bundlepublisherv1.PublishBundleResponse, error) {
	// fail is read before the send, so the test's later write of it is
	// ordered after this read.
	fail := p.fail
	p.got <- req
	if fail != nil {
		return nil, fail
	}
	return &bundlepublisherv1.PublishBundleResponse{}, nil
}

func connect(t *testing.T, p *plugin) *external.Publisher {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "bp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	bundlepublisherv1.RegisterBundlePublisherServer(srv, p)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
		<-done
	})
	return external.New(conn, "s3")
}

func TestPublishBundle(t *testing.T) {
	p := &plugin{got: make(chan *bundlepublisherv1.PublishBundleRequest, 2)}
	pub := connect(t, p)
	if pub.Name() != "s3" {
		t.Fatalf("Name = %q", pub.Name())
	}
	if err := pub.PublishBundle(context.Background(), testBundle(t)); err != nil {
		t.Fatal(err)
	}
	if req := <-p.got; req.GetBundle().GetTrustDomain() != "example.org" || len(req.GetBundle().GetJwtAuthorities()) != 1 {
		t.Fatalf("plugin received %v", req)
	}

	bad := testBundle(t)
	bad.TrustDomain = ""
	err := pub.PublishBundle(context.Background(), bad)
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "bundlepublisher(s3): bundle is invalid: ") {
		t.Fatalf("invalid bundle = %v", err)
	}

	p.fail = status.Error(codes.PermissionDenied, "access denied to bucket")
	err = pub.PublishBundle(context.Background(), testBundle(t))
	<-p.got
	if st, _ := status.FromError(err); st.Code() != codes.PermissionDenied || st.Message() != "bundlepublisher(s3): access denied to bucket" {
		t.Fatalf("plugin failure = %v, want its code with the prefix", err)
	}
}
