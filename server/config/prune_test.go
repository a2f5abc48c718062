package config

import (
	"strings"
	"testing"
	"time"
)

// TestNodeKeys: the SPIRE v1.13.3 keys that once stopped start-up are
// read with SPIRE's meaning.
func TestNodeKeys(t *testing.T) {
	base := `    trust_domain = "example.org"
    data_dir = "d"
`
	c, err := Parse("server.conf", []byte(withServer(base)), false)
	if err != nil {
		t.Fatal(err)
	}
	if s := c.Server; s.PruneAttestedNodesExpiredFor != 0 || s.PruneTOFUNodes || s.MaxAttestedNodeInfoStaleness != nil {
		t.Errorf("defaults: %+v", s)
	}

	c, err = Parse("server.conf", []byte(withServer(base+`    prune_attested_nodes_expired_for = "24h"
    prune_tofu_nodes = true
    max_attested_node_info_staleness = "0s"`)), false)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Server
	if s.PruneAttestedNodesExpiredFor != 24*time.Hour || !s.PruneTOFUNodes || s.MaxAttestedNodeInfoStaleness == nil || *s.MaxAttestedNodeInfoStaleness != 0 {
		t.Errorf("values: %+v", s)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("warnings %q", c.Warnings)
	}

	c, err = Parse("server.conf", []byte(withServer(base+`    prune_tofu_nodes = true`)), false)
	if err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(c.Warnings, "\n"); !strings.Contains(w, "server.conf:4: server.prune_tofu_nodes: has no effect without prune_attested_nodes_expired_for") {
		t.Errorf("no warning for prune_tofu_nodes alone: %q", w)
	}

	for _, tc := range []struct{ text, want string }{
		{`    prune_attested_nodes_expired_for = "a day"`, `server.conf:4: server.prune_attested_nodes_expired_for: invalid duration "a day"`},
		{`    max_attested_node_info_staleness = "-1s"`, `server.conf:4: server.max_attested_node_info_staleness: must not be negative`},
		{`    prune_tofu_nodes = "yes"`, `server.conf:4: server.prune_tofu_nodes: invalid boolean "yes"`},
	} {
		if _, err := Parse("server.conf", []byte(withServer(base+tc.text)), false); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.text, err, tc.want)
		}
	}
}

// TestUnimplementedBuiltins: SPIRE's built-in Notifier, BundlePublisher
// and CredentialComposer plugins are not compiled in; their blocks warn
// and load nothing, while external ones of the same types stay enabled.
func TestUnimplementedBuiltins(t *testing.T) {
	c, err := Parse("server.conf", []byte(withPlugins(`    trust_domain = "example.org"
    data_dir = "d"`, `    Notifier "k8sbundle" { plugin_data {} }
    BundlePublisher "aws_s3" { plugin_data {} }
    CredentialComposer "uniqueid" {}
    Notifier "mine" { plugin_cmd = "/usr/bin/notifier" }
`)), false)
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(c.Warnings, "\n")
	for _, want := range []string{
		`server.conf:7: Notifier "k8sbundle": SPIRE's built-in Notifier plugin "k8sbundle" is not compiled into spire-hw; the block is skipped`,
		`server.conf:8: BundlePublisher "aws_s3": SPIRE's built-in BundlePublisher plugin "aws_s3"`,
		`server.conf:9: CredentialComposer "uniqueid": SPIRE's built-in CredentialComposer plugin "uniqueid"`,
	} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings:\n%s\nlack:\n%s", w, want)
		}
	}
	if ns := c.EnabledPlugins(TypeNotifier); len(ns) != 1 || ns[0].Name != "mine" {
		t.Errorf("enabled notifiers %+v, want only the external one", ns)
	}
	if len(c.EnabledPlugins(TypeBundlePublisher))+len(c.EnabledPlugins(TypeCredentialComposer)) != 0 {
		t.Error("a skipped built-in is still enabled")
	}
}
