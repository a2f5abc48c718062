package main

import (
	"context"
	"slices"
	"testing"

	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	"github.com/spiffe/spire-plugin-sdk/plugintest"
	credentialcomposerv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/credentialcomposer/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

func load(t *testing.T) *credentialcomposerv1.CredentialComposerPluginClient {
	t.Helper()
	cc := new(credentialcomposerv1.CredentialComposerPluginClient)
	cfg := new(configv1.ConfigServiceClient)
	p := New()
	plugintest.ServeInBackground(t, plugintest.Config{
		PluginServer:   credentialcomposerv1.CredentialComposerPluginServer(p),
		PluginClient:   cc,
		ServiceServers: []pluginsdk.ServiceServer{configv1.ConfigServiceServer(p)},
		ServiceClients: []pluginsdk.ServiceClient{cfg},
	})
	if _, err := cfg.Configure(context.Background(), &configv1.ConfigureRequest{
		CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: "example.org"},
	}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	return cc
}

func TestComposeWorkload(t *testing.T) {
	cc := load(t)
	ctx := context.Background()
	x509Attrs := &credentialcomposerv1.X509SVIDAttributes{
		Subject: &credentialcomposerv1.DistinguishedName{Organization: []string{"SPIRE"}},
		DnsSans: []string{"web.example.org"},
	}
	resp, err := cc.ComposeWorkloadX509SVID(ctx, &credentialcomposerv1.ComposeWorkloadX509SVIDRequest{Attributes: x509Attrs, SpiffeId: "spiffe://example.org/web"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(resp.Attributes.DnsSans, []string{"web.example.org", "composed.test"}) || !proto.Equal(resp.Attributes.Subject, x509Attrs.Subject) {
		t.Fatalf("X509 attributes %v", resp.Attributes)
	}
	// Composing twice adds the SAN once.
	again, err := cc.ComposeWorkloadX509SVID(ctx, &credentialcomposerv1.ComposeWorkloadX509SVIDRequest{Attributes: resp.Attributes})
	if err != nil || len(again.Attributes.DnsSans) != 2 {
		t.Fatalf("second compose %v, %v", again, err)
	}

	claims, err := structpb.NewStruct(map[string]any{"sub": "spiffe://example.org/web", "aud": []any{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	jwt, err := cc.ComposeWorkloadJWTSVID(ctx, &credentialcomposerv1.ComposeWorkloadJWTSVIDRequest{Attributes: &credentialcomposerv1.JWTSVIDAttributes{Claims: claims}})
	if err != nil {
		t.Fatal(err)
	}
	got := jwt.Attributes.Claims.AsMap()
	if got["composed"] != true || got["sub"] != "spiffe://example.org/web" || len(got) != 3 {
		t.Fatalf("claims %v", got)
	}
	empty, err := cc.ComposeWorkloadJWTSVID(ctx, &credentialcomposerv1.ComposeWorkloadJWTSVIDRequest{Attributes: &credentialcomposerv1.JWTSVIDAttributes{}})
	if err != nil || empty.Attributes.Claims.AsMap()["composed"] != true {
		t.Fatalf("compose without claims: %v, %v", empty, err)
	}
}

func TestComposeOthersUnchanged(t *testing.T) {
	cc := load(t)
	ctx := context.Background()
	svid := &credentialcomposerv1.X509SVIDAttributes{Subject: &credentialcomposerv1.DistinguishedName{CommonName: "x"}, DnsSans: []string{"a"}}
	ca := &credentialcomposerv1.X509CAAttributes{Subject: &credentialcomposerv1.DistinguishedName{Country: []string{"US"}}, PolicyIdentifiers: []string{"1.2.3"}}

	caResp, err := cc.ComposeServerX509CA(ctx, &credentialcomposerv1.ComposeServerX509CARequest{Attributes: ca})
	if err != nil || !proto.Equal(caResp.Attributes, ca) {
		t.Fatalf("ComposeServerX509CA = %v, %v", caResp, err)
	}
	serverResp, err := cc.ComposeServerX509SVID(ctx, &credentialcomposerv1.ComposeServerX509SVIDRequest{Attributes: svid})
	if err != nil || !proto.Equal(serverResp.Attributes, svid) {
		t.Fatalf("ComposeServerX509SVID = %v, %v", serverResp, err)
	}
	agentResp, err := cc.ComposeAgentX509SVID(ctx, &credentialcomposerv1.ComposeAgentX509SVIDRequest{Attributes: svid, SpiffeId: "spiffe://example.org/spire/agent/x"})
	if err != nil || !proto.Equal(agentResp.Attributes, svid) {
		t.Fatalf("ComposeAgentX509SVID = %v, %v", agentResp, err)
	}
	if _, err := cc.ComposeWorkloadX509SVID(ctx, &credentialcomposerv1.ComposeWorkloadX509SVIDRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("compose without attributes = %v, want InvalidArgument", err)
	}
}
