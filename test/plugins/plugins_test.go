// Package plugins_test runs the test plugins as what hosts see: binaries
// started by hashicorp/go-plugin with the SPIRE plugin SDK's handshake. It
// checks what an in-process test cannot: that each main builds and serves,
// that the HMAC attestor pair agrees across two processes, and that the
// fault keys kill or hang a real plugin process.
package plugins_test

import (
	"context"
	"errors"
	"io"
	"os/exec"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"github.com/spiffe-hw/spire-hw/test/plugins/pluginbuild"
	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	"github.com/spiffe/spire-plugin-sdk/private"
	agentstorev1 "github.com/spiffe/spire-plugin-sdk/proto/spire/hostservice/server/agentstore/v1"
	agentnodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/nodeattestor/v1"
	servernodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	notifierv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/notifier/v1"
	"github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/types"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// host is the smallest plugin host: it hands the plugin's gRPC connection
// to the test and serves host services on the broker, as SPIRE does.
type host struct {
	goplugin.NetRPCUnsupportedPlugin
	services []pluginsdk.ServiceServer
}

func (h *host) GRPCServer(*goplugin.GRPCBroker, *grpc.Server) error {
	return errors.New("host side only")
}

func (h *host) GRPCClient(_ context.Context, b *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	go b.AcceptAndServe(private.HostServiceProviderID, func(opts []grpc.ServerOption) *grpc.Server {
		s := grpc.NewServer(opts...)
		for _, svc := range h.services {
			svc.RegisterServer(s)
		}
		return s
	})
	return c, nil
}

// loaded is a started plugin process.
type loaded struct {
	client *goplugin.Client
	config *configv1.ConfigServiceClient
}

// start builds and starts plugin name, initialises pc on it and returns the
// process; hostServices are offered to the plugin.
func start(t *testing.T, name string, pc pluginsdk.PluginClient, hostServices ...pluginsdk.ServiceServer) (*loaded, error) {
	t.Helper()
	path := pluginbuild.Build(t, name)
	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  goplugin.HandshakeConfig{ProtocolVersion: 1, MagicCookieKey: pc.Type(), MagicCookieValue: pc.Type()},
		Plugins:          map[string]goplugin.Plugin{pc.Type(): &host{services: hostServices}},
		Cmd:              exec.Command(path),
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		Logger:           hclog.NewNullLogger(),
		StartTimeout:     30 * time.Second,
	})
	t.Cleanup(client.Kill)
	rpc, err := client.Client()
	if err != nil {
		return nil, err
	}
	raw, err := rpc.Dispense(pc.Type())
	if err != nil {
		return nil, err
	}
	conn := raw.(*grpc.ClientConn)
	var names []string
	for _, s := range hostServices {
		names = append(names, s.GRPCServiceName())
	}
	if _, err := private.Init(context.Background(), conn, names); err != nil {
		return nil, err
	}
	pc.InitClient(conn)
	cfg := new(configv1.ConfigServiceClient)
	cfg.InitClient(conn)
	return &loaded{client: client, config: cfg}, nil
}

func (l *loaded) configure(hcl string) error {
	_, err := l.config.Configure(context.Background(), &configv1.ConfigureRequest{
		CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: "example.org"},
		HclConfiguration:  hcl,
	})
	return err
}

type agentStore struct {
	agentstorev1.UnimplementedAgentStoreServer
}

func (agentStore) GetAgentInfo(context.Context, *agentstorev1.GetAgentInfoRequest) (*agentstorev1.GetAgentInfoResponse, error) {
	return nil, status.Error(codes.NotFound, "no such agent")
}

func TestAllPluginsBuild(t *testing.T) {
	for _, name := range []string{"workloadattestor", "agentnodeattestor", "servernodeattestor", "keymanager",
		"upstreamauthority", "notifier", "bundlepublisher", "svidstore", "credentialcomposer", "notaplugin"} {
		pluginbuild.Build(t, name)
	}
}

// TestHMACPairAcrossProcesses relays one attestation between the two
// plugin binaries, as the agent and server would.
func TestHMACPairAcrossProcesses(t *testing.T) {
	tests := []struct {
		name        string
		agentSecret string
		wantCode    codes.Code
	}{
		{name: "same secret", agentSecret: "s3cret", wantCode: codes.OK},
		{name: "wrong secret", agentSecret: "guess", wantCode: codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := new(agentnodeattestorv1.NodeAttestorPluginClient)
			a, err := start(t, "agentnodeattestor", agent)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.configure("node_name = \"node-1\"\nsecret = \"" + tt.agentSecret + "\""); err != nil {
				t.Fatal(err)
			}
			server := new(servernodeattestorv1.NodeAttestorPluginClient)
			s, err := start(t, "servernodeattestor", server, agentstorev1.AgentStoreServiceServer(agentStore{}))
			if err != nil {
				t.Fatal(err)
			}
			if err := s.configure("secret = \"s3cret\"\nuse_agent_store = true"); err != nil {
				t.Fatal(err)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			as, err := agent.AidAttestation(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ss, err := server.Attest(ctx)
			if err != nil {
				t.Fatal(err)
			}
			first, err := as.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if err := ss.Send(&servernodeattestorv1.AttestRequest{Request: &servernodeattestorv1.AttestRequest_Payload{Payload: first.GetPayload()}}); err != nil {
				t.Fatal(err)
			}
			var attrs *servernodeattestorv1.AgentAttributes
			for attrs == nil {
				resp, err := ss.Recv()
				if err != nil {
					if status.Code(err) != tt.wantCode {
						t.Fatalf("server Recv = %v, want %v", err, tt.wantCode)
					}
					return
				}
				if attrs = resp.GetAgentAttributes(); attrs != nil {
					break
				}
				if err := as.Send(&agentnodeattestorv1.Challenge{Challenge: resp.GetChallenge()}); err != nil {
					t.Fatal(err)
				}
				answer, err := as.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if err := ss.Send(&servernodeattestorv1.AttestRequest{Request: &servernodeattestorv1.AttestRequest_ChallengeResponse{
					ChallengeResponse: answer.GetChallengeResponse()}}); err != nil {
					t.Fatal(err)
				}
			}
			if tt.wantCode != codes.OK {
				t.Fatalf("attested with %v, want %v", attrs, tt.wantCode)
			}
			if attrs.SpiffeId != "spiffe://example.org/spire/agent/hmac/node-1" || len(attrs.SelectorValues) != 2 || attrs.SelectorValues[1] != "seen_before:false" {
				t.Fatalf("attributes %v", attrs)
			}
			if err := as.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if _, err := as.Recv(); !errors.Is(err, io.EOF) {
				t.Fatalf("agent stream after CloseSend: %v, want EOF", err)
			}
		})
	}
}

func TestFaults(t *testing.T) {
	notify := func(ctx context.Context, n *notifierv1.NotifierPluginClient) error {
		_, err := n.Notify(ctx, &notifierv1.NotifyRequest{Event: &notifierv1.NotifyRequest_BundleUpdated{
			BundleUpdated: &notifierv1.BundleUpdated{Bundle: &types.Bundle{TrustDomain: "example.org"}}}})
		return err
	}
	t.Run("exit_in_configure", func(t *testing.T) {
		n := new(notifierv1.NotifierPluginClient)
		l, err := start(t, "notifier", n)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.configure("path = \"" + t.TempDir() + "/x\"\nexit_in_configure = true"); status.Code(err) != codes.Unavailable {
			t.Fatalf("Configure = %v, want Unavailable from a dead plugin", err)
		}
	})
	t.Run("crash", func(t *testing.T) {
		n := new(notifierv1.NotifierPluginClient)
		l, err := start(t, "notifier", n)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.configure("path = \"" + t.TempDir() + "/x\"\ncrash = true"); err != nil {
			t.Fatal(err)
		}
		if err := notify(context.Background(), n); status.Code(err) != codes.Unavailable {
			t.Fatalf("Notify = %v, want Unavailable from a dead plugin", err)
		}
	})
	t.Run("hang", func(t *testing.T) {
		n := new(notifierv1.NotifierPluginClient)
		l, err := start(t, "notifier", n)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.configure("path = \"" + t.TempDir() + "/x\"\nhang = true"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := notify(ctx, n); status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("Notify = %v, want DeadlineExceeded from a hung plugin", err)
		}
		if l.client.Exited() {
			t.Fatal("a hung plugin exited")
		}
	})
	t.Run("fail_configure", func(t *testing.T) {
		l, err := start(t, "notifier", new(notifierv1.NotifierPluginClient))
		if err != nil {
			t.Fatal(err)
		}
		err = l.configure("path = \"/x\"\nfail_configure = true")
		if status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() != "fail_configure is set" {
			t.Fatalf("Configure = %v", err)
		}
	})
	t.Run("not a plugin", func(t *testing.T) {
		if _, err := start(t, "notaplugin", new(notifierv1.NotifierPluginClient)); err == nil {
			t.Fatal("a plain program passed the plugin handshake")
		}
	})
}
