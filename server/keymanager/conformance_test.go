package keymanager_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/spiffe-hw/spire-hw/plugin"
	"github.com/spiffe-hw/spire-hw/server/keymanager"
	"github.com/spiffe-hw/spire-hw/server/keymanager/external"
	"github.com/spiffe-hw/spire-hw/server/keymanager/keymanagertest"
	"github.com/spiffe-hw/spire-hw/test/plugins/pluginbuild"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	keymanagerv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/keymanager/v1"
)

// TestExternalConformance runs the key manager suite against
// test/plugins/keymanager started by the plugin host as a real process, so
// every key and signature crosses go-plugin as in production. The built-in
// key managers run the same suite in their own packages.
func TestExternalConformance(t *testing.T) {
	cmd := pluginbuild.Build(t, "keymanager")
	keymanagertest.Run(t, func(t *testing.T) keymanager.KeyManager {
		p, err := plugin.Load(context.Background(), plugin.Config{
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
