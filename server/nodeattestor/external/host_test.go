package external_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	pluginhost "github.com/spiffe-hw/spire-hw/plugin"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe-hw/spire-hw/server/hostservice"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/external"
	"github.com/spiffe-hw/spire-hw/test/plugins/hmacnode"
	"github.com/spiffe-hw/spire-hw/test/plugins/pluginbuild"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
)

// The time an agent takes to answer a challenge is not the plugin's: a
// slow agent (a slow TPM, a slow link, or an attacker stalling on
// purpose) must not make the host take a healthy plugin for a hung one and
// restart it under every other attestation.
func TestSlowAgentDoesNotRestartPlugin(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	const callTimeout = 300 * time.Millisecond
	p, err := pluginhost.Load(context.Background(), pluginhost.Config{
		Type: "NodeAttestor", Name: "hmac", Cmd: pluginbuild.Build(t, "servernodeattestor"),
		Data: `secret = "s3cret"`, TrustDomain: td, Service: nodeattestorv1.NodeAttestor_ServiceDesc.ServiceName,
		HostServices: []pluginsdk.ServiceServer{hostservice.AgentStore(sqlitetest.Open(t))},
		Log:          slog.New(slog.DiscardHandler),
		CallTimeout:  callTimeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	a := external.New(p.Conn(), "hmac", td)
	payload := []byte(`{"node":"slow"}`)
	res, err := a.Attest(context.Background(), payload, nil, func(ctx context.Context, challenge []byte) ([]byte, error) {
		time.Sleep(3 * callTimeout) // the agent thinks
		return hmacnode.Response([]byte("s3cret"), payload, challenge), nil
	})
	if err != nil {
		t.Fatalf("attestation with a slow agent: %v", err)
	}
	if res.AgentID.String() != "spiffe://example.org/spire/agent/hmac/slow" {
		t.Fatalf("agent ID %s", res.AgentID)
	}
	if n := p.Restarts(); n != 0 {
		t.Fatalf("a slow agent restarted the plugin %d times", n)
	}
}
