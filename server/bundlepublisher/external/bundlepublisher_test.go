package external_test

import (
	"context"
	"strings"
	"testing"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	bundlepublisherv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/bundlepublisher/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/internal/grpctest"
	"github.com/spiffe-hw/spire-hw/server/bundlepublisher/external"
)

// testBundle is the smallest valid bundle; package pluginbundle tests the
// conversion itself.
func testBundle() *types.Bundle {
	return &types.Bundle{TrustDomain: "example.org", SequenceNumber: 7}
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
	conn := grpctest.Serve(t, func(srv *grpc.Server) { bundlepublisherv1.RegisterBundlePublisherServer(srv, p) })
	return external.New(conn, "s3")
}

func TestPublishBundle(t *testing.T) {
	p := &plugin{got: make(chan *bundlepublisherv1.PublishBundleRequest, 2)}
	pub := connect(t, p)
	if pub.Name() != "s3" {
		t.Fatalf("Name = %q", pub.Name())
	}
	if err := pub.PublishBundle(context.Background(), testBundle()); err != nil {
		t.Fatal(err)
	}
	if req := <-p.got; req.GetBundle().GetTrustDomain() != "example.org" || req.GetBundle().GetSequenceNumber() != 7 {
		t.Fatalf("plugin received %v", req)
	}

	bad := testBundle()
	bad.TrustDomain = ""
	err := pub.PublishBundle(context.Background(), bad)
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "bundlepublisher(s3): bundle is invalid: ") {
		t.Fatalf("invalid bundle = %v", err)
	}

	p.fail = status.Error(codes.PermissionDenied, "access denied to bucket")
	err = pub.PublishBundle(context.Background(), testBundle())
	<-p.got
	if st, _ := status.FromError(err); st.Code() != codes.PermissionDenied || st.Message() != "bundlepublisher(s3): access denied to bucket" {
		t.Fatalf("plugin failure = %v, want its code with the prefix", err)
	}
}
