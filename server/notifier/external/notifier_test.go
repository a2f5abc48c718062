package external_test

import (
	"context"
	"testing"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	notifierv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/notifier/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/internal/grpctest"
	"github.com/spiffe-hw/spire-hw/server/notifier/external"
)

// plugin fails NotifyAndAdvise and Notify with the codes it is given and
// records the trust domain of each event.
type plugin struct {
	notifierv1.UnimplementedNotifierServer
	loaded, updated chan string
	failAdvise      error
	failNotify      error
}

func (p *plugin) NotifyAndAdvise(_ context.Context, req *notifierv1.NotifyAndAdviseRequest) (*notifierv1.NotifyAndAdviseResponse, error) {
	p.loaded <- req.GetBundleLoaded().GetBundle().GetTrustDomain()
	return &notifierv1.NotifyAndAdviseResponse{}, p.failAdvise
}

func (p *plugin) Notify(_ context.Context, req *notifierv1.NotifyRequest) (*notifierv1.NotifyResponse, error) {
	p.updated <- req.GetBundleUpdated().GetBundle().GetTrustDomain()
	return &notifierv1.NotifyResponse{}, p.failNotify
}

func connect(t *testing.T, p *plugin) *external.Notifier {
	t.Helper()
	conn := grpctest.Serve(t, func(srv *grpc.Server) { notifierv1.RegisterNotifierServer(srv, p) })
	return external.New(conn, "k8sbundle")
}

func TestEvents(t *testing.T) {
	p := &plugin{loaded: make(chan string, 1), updated: make(chan string, 1)}
	n := connect(t, p)
	if n.Name() != "k8sbundle" {
		t.Fatalf("Name = %q", n.Name())
	}
	b := &types.Bundle{TrustDomain: "example.org"}
	if err := n.NotifyBundleLoaded(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if td := <-p.loaded; td != "example.org" {
		t.Fatalf("BundleLoaded carried trust domain %q", td)
	}
	if err := n.NotifyBundleUpdated(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if td := <-p.updated; td != "example.org" {
		t.Fatalf("BundleUpdated carried trust domain %q", td)
	}
}

func TestErrors(t *testing.T) {
	p := &plugin{
		loaded: make(chan string, 1), updated: make(chan string, 1),
		failAdvise: status.Error(codes.FailedPrecondition, "no ConfigMap"),
		failNotify: status.Error(codes.Unavailable, "API server down"),
	}
	n := connect(t, p)
	b := &types.Bundle{TrustDomain: "example.org"}
	for _, tc := range []struct {
		err  error
		code codes.Code
		msg  string
	}{
		{n.NotifyBundleLoaded(context.Background(), b), codes.FailedPrecondition, "notifier(k8sbundle): no ConfigMap"},
		{n.NotifyBundleUpdated(context.Background(), b), codes.Unavailable, "notifier(k8sbundle): API server down"},
		{n.NotifyBundleUpdated(context.Background(), &types.Bundle{TrustDomain: "Bad Domain"}), codes.InvalidArgument, ""},
	} {
		st, _ := status.FromError(tc.err)
		if st.Code() != tc.code || (tc.msg != "" && st.Message() != tc.msg) {
			t.Errorf("error = %v, want %s %q", tc.err, tc.code, tc.msg)
		}
	}
}
