package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/spiffe-hw/spire-hw/test/plugins/hmacnode"
	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	"github.com/spiffe/spire-plugin-sdk/plugintest"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func load(t *testing.T) (*nodeattestorv1.NodeAttestorPluginClient, *configv1.ConfigServiceClient) {
	t.Helper()
	na := new(nodeattestorv1.NodeAttestorPluginClient)
	cfg := new(configv1.ConfigServiceClient)
	p := New()
	plugintest.ServeInBackground(t, plugintest.Config{
		PluginServer:   nodeattestorv1.NodeAttestorPluginServer(p),
		PluginClient:   na,
		ServiceServers: []pluginsdk.ServiceServer{configv1.ConfigServiceServer(p)},
		ServiceClients: []pluginsdk.ServiceClient{cfg},
	})
	return na, cfg
}

func configure(cfg *configv1.ConfigServiceClient, hcl string) error {
	_, err := cfg.Configure(context.Background(), &configv1.ConfigureRequest{
		CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: "example.org"},
		HclConfiguration:  hcl,
	})
	return err
}

func TestAidAttestation(t *testing.T) {
	na, cfg := load(t)
	if err := configure(cfg, "node_name = \"node-1\"\nsecret = \"s3cret\""); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	stream, err := na.AidAttestation(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("Recv payload: %v", err)
	}
	sent := resp.GetPayload()
	payload, err := hmacnode.ParsePayload(sent)
	if err != nil || payload.Node != "node-1" {
		t.Fatalf("payload %q: %+v, %v", resp.GetPayload(), payload, err)
	}
	// Two rounds: the plugin must answer every challenge, not just one.
	for i, challenge := range [][]byte{bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)} {
		if err := stream.Send(&nodeattestorv1.Challenge{Challenge: challenge}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv answer %d: %v", i, err)
		}
		if !hmacnode.Verify([]byte("s3cret"), sent, challenge, resp.GetChallengeResponse()) {
			t.Fatalf("answer %d does not verify", i)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv after CloseSend = %v, want EOF", err)
	}
}

func TestConfigureRefusals(t *testing.T) {
	for _, hcl := range []string{``, `node_name = "n"`, `secret = "s"`, "node_name = \"n\"\nsecret = \"s\"\nfail_configure = true"} {
		t.Run(hcl, func(t *testing.T) {
			_, cfg := load(t)
			if err := configure(cfg, hcl); status.Code(err) != codes.InvalidArgument {
				t.Fatalf("Configure(%q) = %v, want InvalidArgument", hcl, err)
			}
		})
	}
}
