package main

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/spiffe-hw/spire-hw/test/plugins/bundlelog"
	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	"github.com/spiffe/spire-plugin-sdk/plugintest"
	bundlepublisherv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/bundlepublisher/v1"
	"github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/types"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func load(t *testing.T, hcl string) (*bundlepublisherv1.BundlePublisherPluginClient, error) {
	t.Helper()
	bp := new(bundlepublisherv1.BundlePublisherPluginClient)
	cfg := new(configv1.ConfigServiceClient)
	p := New()
	plugintest.ServeInBackground(t, plugintest.Config{
		PluginServer:   bundlepublisherv1.BundlePublisherPluginServer(p),
		PluginClient:   bp,
		ServiceServers: []pluginsdk.ServiceServer{configv1.ConfigServiceServer(p)},
		ServiceClients: []pluginsdk.ServiceClient{cfg},
	})
	_, err := cfg.Configure(context.Background(), &configv1.ConfigureRequest{
		CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: "example.org"},
		HclConfiguration:  hcl,
	})
	return bp, err
}

func TestPublishBundle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "published.jsonl")
	bp, err := load(t, `path = "`+path+`"`)
	if err != nil {
		t.Fatalf("Configure: %v", err)
	}
	for seq := uint64(1); seq <= 2; seq++ {
		if _, err := bp.PublishBundle(context.Background(), &bundlepublisherv1.PublishBundleRequest{Bundle: &types.Bundle{
			TrustDomain: "example.org", X509Authorities: []*types.X509Certificate{{Asn1: []byte("root")}}, SequenceNumber: seq,
		}}); err != nil {
			t.Fatalf("PublishBundle: %v", err)
		}
	}
	lines, err := bundlelog.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 2 || lines[0].Event != "published" || lines[0].SequenceNumber != 1 || lines[1].SequenceNumber != 2 || lines[1].X509Authorities != 1 {
		t.Fatalf("lines = %+v", lines)
	}
	if _, err := bp.PublishBundle(context.Background(), &bundlepublisherv1.PublishBundleRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("PublishBundle without bundle = %v, want InvalidArgument", err)
	}
}
