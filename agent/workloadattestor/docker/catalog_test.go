package docker_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/catalog"
	"github.com/spiffe-hw/spire-hw/agent/config"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/docker"
)

// build builds the agent's docker row from plugin_data text, as the agent
// does from agent.conf, and returns what it logged.
func build(t *testing.T, data string) (*docker.Attestor, string, error) {
	t.Helper()
	conf := fmt.Sprintf(`agent {
    data_dir = %q
    server_address = "spire-server"
    trust_domain = "example.org"
    insecure_bootstrap = true
    join_token = "t"
}
plugins {
    KeyManager "memory" {}
    NodeAttestor "join_token" {}
    WorkloadAttestor "docker" {
        plugin_data {
%s
        }
    }
}
`, t.TempDir(), data)
	cfg, err := config.Parse("agent.conf", []byte(conf), false)
	if err != nil {
		t.Fatalf("parse:\n%s\n%v", conf, err)
	}
	logs := &syncBuffer{}
	deps := catalog.Deps{Config: cfg, Log: slog.New(slog.NewTextHandler(logs, nil))}
	v, err := catalog.WorkloadAttestors.Build(context.Background(), cfg.EnabledPlugins(config.TypeWorkloadAttestor)[0], deps)
	if err != nil {
		return nil, logs.String(), err
	}
	a, ok := v.(*docker.Attestor)
	if !ok {
		t.Fatalf("built %T", v)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a, logs.String(), nil
}

// syncBuffer is a log sink that the attestor's event watcher may write to
// while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestCatalog: SPIRE's keys load (a SPIRE configuration with a sigstore
// block included, with a warning that it is not acted on); unknown keys
// and SPIRE's own refusals are errors that name the key.
func TestCatalog(t *testing.T) {
	_, logs, err := build(t, `
docker_socket_path = "unix:///run/x/docker.sock"
docker_version = "1.41"
use_new_container_locator = false
container_id_cgroup_matchers = ["/docker/<id>", "/my.slice/*/<id>/*"]
verbose_container_locator_logs = true
experimental {
    sigstore {
        allowed_identities = { "https://accounts.example.org" = ["ci@example.org"] }
        skipped_images = ["registry/img@sha256:00"]
        rekor_url = "https://rekor.example.org"
        ignore_sct = true
        ignore_tlog = false
        ignore_attestations = true
        registry_credentials = { "registry.example.org" = { username = "u" password = "p" } }
    }
}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"experimental.sigstore is accepted but not acted on", "Using the legacy container locator with custom cgroup matchers"} {
		if !strings.Contains(logs, w) {
			t.Errorf("logs lack %q:\n%s", w, logs)
		}
	}
	// The defaults need no engine at start-up (it may start after the
	// agent) and warn of nothing configured.
	if _, logs, err := build(t, ``); err != nil || strings.Contains(logs, "sigstore") || strings.Contains(logs, "legacy") {
		t.Fatalf("defaults: %v, logs %q", err, logs)
	}

	for _, tc := range []struct {
		name, data, want string
	}{
		{"unknown key", `docker_socket = "x"`, `agent.conf:13: WorkloadAttestor "docker".plugin_data.docker_socket: unknown key`},
		{"unknown sigstore key", `experimental { sigstore { rekor = "x" } }`, `plugin_data.experimental.sigstore.rekor: unknown key`},
		{"matchers need the legacy locator", `container_id_cgroup_matchers = ["/docker/<id>"]`,
			`agent.conf:13: WorkloadAttestor "docker".plugin_data.container_id_cgroup_matchers: the new container locator and custom cgroup matchers cannot both be used`},
		{"ambiguous matchers", "use_new_container_locator = false\ncontainer_id_cgroup_matchers = [\"/a/<id>\", \"/*/<id>\"]",
			`agent.conf:14: WorkloadAttestor "docker".plugin_data.container_id_cgroup_matchers: dockerfinder: patterns must not be ambiguous: ["/*/<id>" "/a/<id>"]`},
		{"bad socket", `docker_socket_path = "nowhere"`, `WorkloadAttestor "docker".plugin_data.docker_socket_path: client for nowhere: unable to parse docker host`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := build(t, tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
