package external_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/keymanager"
	"github.com/spiffe-hw/spire-hw/agent/keymanager/external"
	"github.com/spiffe-hw/spire-hw/agent/keymanager/keymanagertest"
	pluginhost "github.com/spiffe-hw/spire-hw/plugin"
	"github.com/spiffe-hw/spire-hw/test/plugins/pluginbuild"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	keymanagerv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/keymanager/v1"
)

// TestHostConformance runs the agent key manager suite against
// test/plugins/agentkeymanager started by the plugin host as a real
// process, where TestConformance uses an in-test plugin on a socket.
func TestHostConformance(t *testing.T) {
	cmd := pluginbuild.Build(t, "agentkeymanager")
	keymanagertest.Run(t, func(t *testing.T) keymanager.KeyManager {
		p, err := pluginhost.Load(context.Background(), pluginhost.Config{
			Type:        "KeyManager",
			Name:        "ext",
			Cmd:         cmd,
			TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
			Service:     keymanagerv1.KeyManager_ServiceDesc.ServiceName,
			Log:         slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		return external.New(p.Conn(), "ext")
	})
}
