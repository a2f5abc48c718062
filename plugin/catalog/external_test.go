package catalog_test

import (
	"context"
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	pluginhost "github.com/spiffe-hw/spire-hw/plugin"
	"github.com/spiffe-hw/spire-hw/plugin/catalog"
	"github.com/spiffe-hw/spire-hw/test/plugins/pluginbuild"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Loader starts the block's binary through the host the deps give and
// hands the running plugin, with the deps, to the adapter.
func TestLoader(t *testing.T) {
	host := pluginhost.Host{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org")}
	type deps struct{ host pluginhost.Host }
	type adapted struct {
		p    *pluginhost.Plugin
		deps deps
	}
	load := catalog.Loader("spire.plugin.agent.workloadattestor.v1.WorkloadAttestor",
		func(d deps) pluginhost.Host { return d.host },
		func(p *pluginhost.Plugin, d deps) adapted { return adapted{p, d} })
	block := hclconf.Plugin{Type: "WorkloadAttestor", Name: "ext", Enabled: true, Cmd: pluginbuild.Build(t, "workloadattestor")}
	got, err := load(context.Background(), block, deps{host})
	if err != nil {
		t.Fatal(err)
	}
	defer got.p.Close()
	if got.p.Name() != "ext" || got.p.PID() == 0 || got.deps.host.TrustDomain != host.TrustDomain {
		t.Fatalf("adapted %+v", got)
	}
	block.Cmd = "/nonexistent/plugin"
	if _, err := load(context.Background(), block, deps{host}); err == nil || !strings.Contains(err.Error(), `WorkloadAttestor "ext"`) {
		t.Fatalf("missing binary: %v", err)
	}
}
