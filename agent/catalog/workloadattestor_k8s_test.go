package catalog_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/config"
	pcatalog "github.com/spiffe-hw/spire-hw/plugin/catalog"
)

// Every key of SPIRE v1.13.3's k8s attestor is accepted; a misspelt one,
// and the combinations SPIRE refuses, are errors at the key's line.
func TestK8sPluginData(t *testing.T) {
	dir := t.TempDir()
	token, ca := filepath.Join(dir, "token"), filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(token, []byte("t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	full := fmt.Sprintf(`WorkloadAttestor "k8s" { plugin_data {
		kubelet_secure_port = 10250
		skip_kubelet_verification = true
		kubelet_ca_path = %q
		token_path = %q
		use_anonymous_authentication = false
		node_name_env = "MY_NODE_NAME"
		node_name = "node-1"
		max_poll_attempts = 5
		poll_retry_interval = "1s"
		reload_interval = "30s"
		disable_container_selectors = true
		use_new_container_locator = false
		verbose_container_locator_logs = true
		experimental { sigstore { skipped_images = ["a"] rekor_url = "https://rekor.example" } }
	} }`, ca, token)
	for _, tc := range []struct {
		name, block string
		want        string // Go type built
		errPrefix   string
	}{
		{name: "every key", block: full, want: "*k8s.Attestor"},
		{name: "read-only port", block: `WorkloadAttestor "k8s" { plugin_data { kubelet_read_only_port = 10255 } }`, want: "*k8s.Attestor"},
		{name: "unknown key", block: `WorkloadAttestor "k8s" { plugin_data { kubelet_port = 10250 } }`,
			errPrefix: `agent.conf:9: WorkloadAttestor "k8s".plugin_data.kubelet_port`},
		{name: "both ports", block: `WorkloadAttestor "k8s" { plugin_data { kubelet_read_only_port = 10255 kubelet_secure_port = 10250 } }`,
			errPrefix: `agent.conf:9: WorkloadAttestor "k8s".plugin_data.kubelet_secure_port: cannot use both the read-only and secure port`},
		{name: "certificate without key", block: fmt.Sprintf(`WorkloadAttestor "k8s" { plugin_data { skip_kubelet_verification = true certificate_path = %q } }`, token),
			errPrefix: `agent.conf:9: WorkloadAttestor "k8s".plugin_data.private_key_path: the private key path is required with the certificate path`},
		{name: "missing token", block: fmt.Sprintf(`WorkloadAttestor "k8s" { plugin_data { skip_kubelet_verification = true token_path = %q } }`, filepath.Join(dir, "none")),
			errPrefix: `agent.conf:9: WorkloadAttestor "k8s".plugin_data.token_path: unable to load token`},
		{name: "missing CA", block: fmt.Sprintf(`WorkloadAttestor "k8s" { plugin_data { kubelet_ca_path = %q token_path = %q } }`, filepath.Join(dir, "none"), token),
			errPrefix: `agent.conf:9: WorkloadAttestor "k8s".plugin_data.kubelet_ca_path: unable to load kubelet CA`},
		{name: "bad duration", block: `WorkloadAttestor "k8s" { plugin_data { kubelet_read_only_port = 10255 poll_retry_interval = "soon" } }`,
			errPrefix: `agent.conf:9: WorkloadAttestor "k8s".plugin_data.poll_retry_interval: `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := build(t, config.TypeWorkloadAttestor, tc.block)
			if tc.want != "" {
				if err != nil {
					t.Fatalf("build: %v", err)
				}
				if got := fmt.Sprintf("%T", v); got != tc.want {
					t.Fatalf("built %s, want %s", got, tc.want)
				}
				if err := pcatalog.Close(v); err != nil {
					t.Errorf("close: %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.errPrefix) {
				t.Fatalf("error %v, want one starting %q", err, tc.errPrefix)
			}
		})
	}
}
