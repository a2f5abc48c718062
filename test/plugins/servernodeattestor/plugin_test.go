package main

import (
	"context"
	"slices"
	"testing"

	"github.com/spiffe-hw/spire-hw/test/plugins/hmacnode"
	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	"github.com/spiffe/spire-plugin-sdk/plugintest"
	agentstorev1 "github.com/spiffe/spire-plugin-sdk/proto/spire/hostservice/server/agentstore/v1"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// agentStore is the host's AgentStore: the agents it knows.
type agentStore struct {
	agentstorev1.UnimplementedAgentStoreServer
	known map[string]bool
}

func (s *agentStore) GetAgentInfo(_ context.Context, req *agentstorev1.GetAgentInfoRequest) (*agentstorev1.GetAgentInfoResponse, error) {
	if !s.known[req.AgentId] {
		return nil, status.Error(codes.NotFound, "no such agent")
	}
	return &agentstorev1.GetAgentInfoResponse{Info: &agentstorev1.AgentInfo{AgentId: req.AgentId}}, nil
}

func load(t *testing.T, hcl string, store *agentStore) *nodeattestorv1.NodeAttestorPluginClient {
	t.Helper()
	na := new(nodeattestorv1.NodeAttestorPluginClient)
	cfg := new(configv1.ConfigServiceClient)
	p := New()
	plugintest.ServeInBackground(t, plugintest.Config{
		PluginServer:       nodeattestorv1.NodeAttestorPluginServer(p),
		PluginClient:       na,
		ServiceServers:     []pluginsdk.ServiceServer{configv1.ConfigServiceServer(p)},
		ServiceClients:     []pluginsdk.ServiceClient{cfg},
		HostServiceServers: []pluginsdk.ServiceServer{agentstorev1.AgentStoreServiceServer(store)},
	})
	if _, err := cfg.Configure(context.Background(), &configv1.ConfigureRequest{
		CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: "example.org"},
		HclConfiguration:  hcl,
	}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	return na
}

// attest plays the host: it sends payload, answers the one challenge with
// answer(challenge), and returns the attributes or the error.
func attest(t *testing.T, na *nodeattestorv1.NodeAttestorPluginClient, payload []byte, answer func([]byte) []byte) (*nodeattestorv1.AgentAttributes, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := na.Attest(ctx)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	if err := stream.Send(&nodeattestorv1.AttestRequest{Request: &nodeattestorv1.AttestRequest_Payload{Payload: payload}}); err != nil {
		t.Fatalf("send payload: %v", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	challenge := resp.GetChallenge()
	if len(challenge) != hmacnode.ChallengeSize {
		t.Fatalf("challenge is %d bytes, want %d", len(challenge), hmacnode.ChallengeSize)
	}
	if err := stream.Send(&nodeattestorv1.AttestRequest{Request: &nodeattestorv1.AttestRequest_ChallengeResponse{ChallengeResponse: answer(challenge)}}); err != nil {
		t.Fatalf("send answer: %v", err)
	}
	resp, err = stream.Recv()
	if err != nil {
		return nil, err
	}
	if resp.GetAgentAttributes() == nil {
		t.Fatalf("second response %v has no attributes", resp)
	}
	return resp.GetAgentAttributes(), nil
}

func TestAttest(t *testing.T) {
	const agentID = "spiffe://example.org/spire/agent/hmac/node-1"
	goodPayload := []byte(`{"node":"node-1"}`)
	right := func(c []byte) []byte { return hmacnode.Response([]byte("s3cret"), goodPayload, c) }
	tests := []struct {
		name      string
		hcl       string
		known     map[string]bool
		payload   []byte
		answer    func([]byte) []byte
		wantCode  codes.Code
		wantMsg   string
		selectors []string
	}{
		{name: "right secret", hcl: `secret = "s3cret"`, payload: goodPayload, answer: right, selectors: []string{"node:node-1"}},
		{name: "new agent from the store", hcl: "secret = \"s3cret\"\nuse_agent_store = true", payload: goodPayload, answer: right,
			selectors: []string{"node:node-1", "seen_before:false"}},
		{name: "known agent from the store", hcl: "secret = \"s3cret\"\nuse_agent_store = true", known: map[string]bool{agentID: true},
			payload: goodPayload, answer: right, selectors: []string{"node:node-1", "seen_before:true"}},
		{name: "wrong secret", hcl: `secret = "s3cret"`, payload: goodPayload,
			answer: func(c []byte) []byte { return hmacnode.Response([]byte("guess"), goodPayload, c) }, wantCode: codes.PermissionDenied, wantMsg: "hmac mismatch"},
		{name: "empty answer", hcl: `secret = "s3cret"`, payload: goodPayload,
			answer: func([]byte) []byte { return nil }, wantCode: codes.PermissionDenied, wantMsg: "hmac mismatch"},
		{name: "answer to another challenge", hcl: `secret = "s3cret"`, payload: goodPayload,
			answer: func(c []byte) []byte { return right(append([]byte{1}, c...)) }, wantCode: codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			na := load(t, tt.hcl, &agentStore{known: tt.known})
			attrs, err := attest(t, na, tt.payload, tt.answer)
			if status.Code(err) != tt.wantCode {
				t.Fatalf("attest: %v, want code %v", err, tt.wantCode)
			}
			if tt.wantMsg != "" && status.Convert(err).Message() != tt.wantMsg {
				t.Fatalf("attest message %q, want %q", status.Convert(err).Message(), tt.wantMsg)
			}
			if err != nil {
				return
			}
			if attrs.SpiffeId != agentID || !attrs.CanReattest || !slices.Equal(attrs.SelectorValues, tt.selectors) {
				t.Fatalf("attributes = %v, want %s, %q, can reattest", attrs, agentID, tt.selectors)
			}
		})
	}
}

func TestAttestBadPayload(t *testing.T) {
	for _, payload := range []string{`{`, `{}`, `{"node":"a/b"}`, `{"node":".."}`} {
		t.Run(payload, func(t *testing.T) {
			na := load(t, `secret = "s3cret"`, &agentStore{})
			stream, err := na.Attest(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(&nodeattestorv1.AttestRequest{Request: &nodeattestorv1.AttestRequest_Payload{Payload: []byte(payload)}}); err != nil {
				t.Fatal(err)
			}
			if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument {
				t.Fatalf("Recv = %v, want InvalidArgument", err)
			}
		})
	}
}

func TestConfigureRefusals(t *testing.T) {
	tests := []struct{ name, td, hcl string }{
		{name: "no secret", td: "example.org", hcl: ``},
		{name: "bad trust domain", td: "Not A Domain", hcl: `secret = "s"`},
		{name: "fail_configure", td: "example.org", hcl: "secret = \"s\"\nfail_configure = true"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := new(configv1.ConfigServiceClient)
			p := New()
			plugintest.ServeInBackground(t, plugintest.Config{
				PluginServer:       nodeattestorv1.NodeAttestorPluginServer(p),
				PluginClient:       new(nodeattestorv1.NodeAttestorPluginClient),
				ServiceServers:     []pluginsdk.ServiceServer{configv1.ConfigServiceServer(p)},
				ServiceClients:     []pluginsdk.ServiceClient{cfg},
				HostServiceServers: []pluginsdk.ServiceServer{agentstorev1.AgentStoreServiceServer(&agentStore{})},
			})
			_, err := cfg.Configure(context.Background(), &configv1.ConfigureRequest{
				CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: tt.td},
				HclConfiguration:  tt.hcl,
			})
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("Configure = %v, want InvalidArgument", err)
			}
		})
	}
}
