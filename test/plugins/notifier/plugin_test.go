package main

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/spiffe-hw/spire-hw/test/plugins/bundlelog"
	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	"github.com/spiffe/spire-plugin-sdk/plugintest"
	notifierv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/notifier/v1"
	"github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/types"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func load(t *testing.T, hcl string) (*notifierv1.NotifierPluginClient, error) {
	t.Helper()
	n := new(notifierv1.NotifierPluginClient)
	cfg := new(configv1.ConfigServiceClient)
	p := New()
	plugintest.ServeInBackground(t, plugintest.Config{
		PluginServer:   notifierv1.NotifierPluginServer(p),
		PluginClient:   n,
		ServiceServers: []pluginsdk.ServiceServer{configv1.ConfigServiceServer(p)},
		ServiceClients: []pluginsdk.ServiceClient{cfg},
	})
	_, err := cfg.Configure(context.Background(), &configv1.ConfigureRequest{
		CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: "example.org"},
		HclConfiguration:  hcl,
	})
	return n, err
}

func TestNotify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	n, err := load(t, `path = "`+path+`"`)
	if err != nil {
		t.Fatalf("Configure: %v", err)
	}
	ctx := context.Background()
	loaded := &types.Bundle{TrustDomain: "example.org", X509Authorities: []*types.X509Certificate{{Asn1: []byte("root")}}, SequenceNumber: 1}
	updated := &types.Bundle{TrustDomain: "example.org", X509Authorities: []*types.X509Certificate{{Asn1: []byte("root")}, {Asn1: []byte("next")}},
		JwtAuthorities: []*types.JWTKey{{KeyId: "k"}}, SequenceNumber: 2}
	if _, err := n.NotifyAndAdvise(ctx, &notifierv1.NotifyAndAdviseRequest{Event: &notifierv1.NotifyAndAdviseRequest_BundleLoaded{
		BundleLoaded: &notifierv1.BundleLoaded{Bundle: loaded}}}); err != nil {
		t.Fatalf("NotifyAndAdvise: %v", err)
	}
	if _, err := n.Notify(ctx, &notifierv1.NotifyRequest{Event: &notifierv1.NotifyRequest_BundleUpdated{
		BundleUpdated: &notifierv1.BundleUpdated{Bundle: updated}}}); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	lines, err := bundlelog.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2: %+v", len(lines), lines)
	}
	if l := lines[0]; l.Event != "loaded" || l.SequenceNumber != 1 || l.X509Authorities != 1 || len(l.X509SHA256) != 1 {
		t.Fatalf("first line %+v", l)
	}
	if l := lines[1]; l.Event != "updated" || l.SequenceNumber != 2 || l.X509Authorities != 2 || l.JWTAuthorities != 1 || l.TrustDomain != "example.org" {
		t.Fatalf("second line %+v", l)
	}

	if _, err := n.Notify(ctx, &notifierv1.NotifyRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Notify without event = %v, want InvalidArgument", err)
	}
}
