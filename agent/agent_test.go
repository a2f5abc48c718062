package agent

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/catalog"
	"github.com/spiffe-hw/spire-hw/agent/config"
)

// agentConf is a configuration whose plugins block starts at line 10 with
// the blocks given.
func agentConf(t *testing.T, plugins ...string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	text := fmt.Sprintf("agent {\n    data_dir = %q\n    server_address = \"127.0.0.1\"\n    trust_domain = \"example.org\"\n    insecure_bootstrap = true\n    join_token = \"t\"\n    socket_path = %q\n}\nplugins {\n    %s\n}\n",
		dir, filepath.Join(dir, "api.sock"), strings.Join(plugins, "\n    "))
	cfg, err := config.Parse("agent.conf", []byte(text), false)
	if err != nil {
		t.Fatalf("parse:\n%s\n%v", text, err)
	}
	return cfg
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestNewBuildsFromCatalog: every plugin the catalog built is kept, in
// build order, for Run to close.
func TestNewBuildsFromCatalog(t *testing.T) {
	cfg := agentConf(t, `KeyManager "memory" {}`, `NodeAttestor "join_token" {}`,
		`WorkloadAttestor "lineage" { plugin_data { disable_ebpf = true } }`, `WorkloadAttestor "unix" {}`)
	a, err := New(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		a.manager.Close()
		closePlugins(a.plugins, a.log)
	}()
	var got []string
	for _, p := range a.plugins {
		got = append(got, fmt.Sprintf("%T", p))
	}
	if want := []string{"*memory.KeyManager", "*jointoken.Attestor", "*lineage.Attestor", "*unix.Attestor"}; !slices.Equal(got, want) {
		t.Fatalf("plugins %q, want %q", got, want)
	}
}

// TestNewErrors: the errors an operator saw before the catalog existed.
func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		plugins []string
		err     string
	}{
		{"unknown KeyManager", []string{`KeyManager "vault" {}`, `NodeAttestor "join_token" {}`, `WorkloadAttestor "unix" {}`},
			`agent.conf:10: KeyManager "vault": unknown KeyManager plugin "vault" (supported: memory, disk, tpm)`},
		{"unknown NodeAttestor", []string{`KeyManager "memory" {}`, `NodeAttestor "k8s_sat" {}`, `WorkloadAttestor "unix" {}`},
			`agent.conf:11: NodeAttestor "k8s_sat": unknown NodeAttestor plugin "k8s_sat" (supported: join_token, tpm, aws_iid, azure_msi, gcp_iit, k8s_psat, x509pop, sshpop, tpm_devid)`},
		{"unknown second WorkloadAttestor", []string{`KeyManager "memory" {}`, `NodeAttestor "join_token" {}`,
			`WorkloadAttestor "lineage" { plugin_data { disable_ebpf = true } }`, `WorkloadAttestor "windows" {}`},
			`agent.conf:13: WorkloadAttestor "windows": unknown WorkloadAttestor plugin "windows" (supported: unix, lineage, docker, k8s, systemd)`},
		{"disk KeyManager without directory", []string{`KeyManager "disk" { plugin_data {} }`, `NodeAttestor "join_token" {}`, `WorkloadAttestor "unix" {}`},
			`agent.conf:10: KeyManager "disk".plugin_data.directory: is required`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(agentConf(t, tc.plugins...), quiet())
			if err == nil || err.Error() != tc.err {
				t.Fatalf("error:\n got %v\nwant %s", err, tc.err)
			}
		})
	}
}

// TestNoPlugin covers a Config built by hand, which agent/config's arity
// rules never saw.
func TestNoPlugin(t *testing.T) {
	cfg := &config.Config{}
	deps := catalog.Deps{Config: cfg, Log: quiet()}
	if _, err := newKeyManager(context.Background(), cfg, deps); err == nil || err.Error() != "agent: no KeyManager plugin configured" {
		t.Errorf("KeyManager: %v", err)
	}
	if _, err := newNodeAttestor(context.Background(), cfg, deps); err == nil || err.Error() != "agent: no NodeAttestor plugin configured" {
		t.Errorf("NodeAttestor: %v", err)
	}
}
