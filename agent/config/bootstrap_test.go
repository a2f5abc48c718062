package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBootstrapKeys covers the SPIRE v1.13.3 keys that once stopped
// start-up: each is read with SPIRE's default and SPIRE's rules.
func TestBootstrapKeys(t *testing.T) {
	bundle := "    trust_bundle_path = \"b.pem\"\n"
	c, err := Parse("agent.conf", []byte(withAgent(base+bundle)), false)
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Agent; a.RebootstrapMode != RebootstrapNever || a.RebootstrapDelay != 10*time.Minute || a.RetryBootstrap != nil || a.FeatureFlags != nil {
		t.Errorf("defaults: mode %q delay %v retry %v flags %v", a.RebootstrapMode, a.RebootstrapDelay, a.RetryBootstrap, a.FeatureFlags)
	}

	c, err = Parse("agent.conf", []byte(withAgent(base+bundle+`    rebootstrap_mode = "always"
    rebootstrap_delay = "90s"
    experimental {
        feature_flags = ["i_am_a_test_flag"]
    }`)), false)
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Agent; a.RebootstrapMode != RebootstrapAlways || a.RebootstrapDelay != 90*time.Second || len(a.FeatureFlags) != 1 {
		t.Errorf("values: %+v", a)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("warnings %q", c.Warnings)
	}

	c, err = Parse("agent.conf", []byte(withAgent(base+bundle+"    retry_bootstrap = false")), false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Agent.RetryBootstrap == nil || *c.Agent.RetryBootstrap {
		t.Errorf("retry_bootstrap = %v, want false", c.Agent.RetryBootstrap)
	}
	if w := strings.Join(c.Warnings, "\n"); !strings.Contains(w, "agent.retry_bootstrap: deprecated") {
		t.Errorf("no deprecation warning: %q", w)
	}

	c, err = Parse("agent.conf", []byte(withAgent(base+`    trust_bundle_url = "http://localhost/bundle?site=a"
    trust_bundle_unix_socket = "/run/bundle.sock"`)), false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Agent.TrustBundleUnixSocket != "/run/bundle.sock" || len(c.Warnings) != 0 {
		t.Errorf("unix socket: %+v warnings %q", c.Agent, c.Warnings)
	}
}

func TestBootstrapKeyErrors(t *testing.T) {
	bundle := "    trust_bundle_path = \"b.pem\"\n"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, text, want string }{
		{"unknown feature flag", withAgent(base + bundle + "    experimental {\n      feature_flags = [\"nope\", \"also\"]\n    }"),
			`agent.conf:7: agent.experimental.feature_flags: unknown feature flag(s): [also nope]`},
		{"bad rebootstrap mode", withAgent(base + bundle + `    rebootstrap_mode = "sometimes"`),
			`agent.rebootstrap_mode: unknown rebootstrap mode "sometimes" (use never, auto or always)`},
		{"rebootstrap with insecure bootstrap", withAgent(base + "    insecure_bootstrap = true\n    rebootstrap_mode = \"auto\""),
			`agent.rebootstrap_mode: "auto" cannot be used with insecure_bootstrap`},
		{"rebootstrap with retry_bootstrap", withAgent(base + bundle + "    rebootstrap_mode = \"auto\"\n    retry_bootstrap = true"),
			`agent.retry_bootstrap: cannot be set when rebootstrap_mode is "auto"`},
		{"bad rebootstrap delay", withAgent(base + bundle + `    rebootstrap_delay = "soon"`),
			`agent.rebootstrap_delay: invalid duration "soon"`},
		{"socket without url", withAgent(base + bundle + `    trust_bundle_unix_socket = "/run/b.sock"`),
			`agent.trust_bundle_unix_socket: set without trust_bundle_url`},
		{"https through the socket", withAgent(base + "    trust_bundle_url = \"https://x/b\"\n    trust_bundle_unix_socket = \"/run/b.sock\""),
			`agent.trust_bundle_url: "https://x/b" must start with http:// when used with trust_bundle_unix_socket`},
		{"reserved query parameter", withAgent(base + "    trust_bundle_url = \"http://x/b?spire-server-port=1\"\n    trust_bundle_unix_socket = \"/run/b.sock\""),
			`agent.trust_bundle_url: query parameter "spire-server-port" must not start with spiffe- or spire-`},
		{"token and token file", withAgent(base + bundle + "    join_token = \"a\"\n    join_token_file = \"" + tokenFile + "\""),
			`agent.join_token_file: set together with join_token (keep only one)`},
		{"empty token file", withAgent(base + bundle + "    join_token_file = \"" + tokenFile + "\""),
			`agent.join_token_file: ` + tokenFile + ` is empty`},
		{"missing token file", withAgent(base + bundle + "    join_token_file = \"" + tokenFile + ".missing\""),
			`agent.join_token_file: unable to read join token file`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("agent.conf", []byte(tc.text), false)
			if err == nil {
				t.Fatalf("no error; config %+v", c)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error:\n%v\ndoes not contain:\n%s", err, tc.want)
			}
		})
	}
}

func TestJoinTokenFile(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("  tok-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Parse("agent.conf", []byte(withAgent(base+"    trust_bundle_path = \"b.pem\"\n    join_token_file = \""+tokenFile+"\"")), false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Agent.JoinToken != "tok-from-file" {
		t.Errorf("join token %q, want the file's trimmed contents", c.Agent.JoinToken)
	}

	// -joinTokenFile, and the other bootstrap flags, as SPIRE's run has them.
	path := writeConf(t, withAgent(base+"    trust_bundle_path = \"b.pem\""))
	c, err = FromRunArgs([]string{"-config", path, "-joinTokenFile", tokenFile, "-rebootstrapMode", "auto", "-rebootstrapDelay", "1m"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Agent; a.JoinToken != "tok-from-file" || a.RebootstrapMode != RebootstrapAuto || a.RebootstrapDelay != time.Minute {
		t.Errorf("flags: %+v", a)
	}
	c, err = FromRunArgs([]string{"-config", path, "-retryBootstrap=false"}, &bytes.Buffer{})
	if err != nil || c.Agent.RetryBootstrap == nil || *c.Agent.RetryBootstrap {
		t.Errorf("-retryBootstrap=false: %+v %v", c, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-config", path, "-rebootstrapMode", "x"}, `flag -rebootstrapMode: unknown rebootstrap mode "x"`},
		{[]string{"-config", path, "-rebootstrapDelay", "x"}, `flag -rebootstrapDelay: invalid duration "x"`},
		{[]string{"-config", path, "-joinToken", "a", "-joinTokenFile", tokenFile}, `join_token_file: set together with join_token`},
	} {
		if _, err := FromRunArgs(tc.args, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("FromRunArgs(%q) = %v, want %q", tc.args, err, tc.want)
		}
	}
}

// TestUnimplementedSVIDStore: SPIRE's built-in SVIDStores warn and load
// nothing; an external one stays enabled.
func TestUnimplementedSVIDStore(t *testing.T) {
	text := strings.Replace(withAgent(base+"    trust_bundle_path = \"b.pem\""), "plugins {\n",
		"plugins {\n    SVIDStore \"aws_secretsmanager\" { plugin_data {} }\n    SVIDStore \"vault\" { plugin_cmd = \"/usr/bin/vault-store\" }\n", 1)
	c, err := Parse("agent.conf", []byte(text), false)
	if err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(c.Warnings, "\n"); !strings.Contains(w, `agent.conf:9: SVIDStore "aws_secretsmanager": SPIRE's built-in SVIDStore plugin "aws_secretsmanager" is not compiled into spire-hw; the block is skipped`) {
		t.Errorf("warnings: %q", w)
	}
	if ss := c.EnabledPlugins(TypeSVIDStore); len(ss) != 1 || ss[0].Name != "vault" {
		t.Errorf("enabled SVIDStores %+v, want only the external one", ss)
	}
}
