package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const spireQuickstartServerConf = `server {
    bind_address = "127.0.0.1"
    bind_port = "8081"
    socket_path = "/tmp/spire-server/private/api.sock"
    trust_domain = "example.org"
    data_dir = "./data/server"
    log_level = "DEBUG"
    ca_ttl = "168h"
    default_x509_svid_ttl = "48h"
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "./data/server/datastore.sqlite3"
        }
    }

    KeyManager "disk" {
        plugin_data {
            keys_path = "./data/server/keys.json"
        }
    }

    NodeAttestor "join_token" {
        plugin_data {
        }
    }
}
`

// TestSPIREQuickstart runs the server with SPIRE's quickstart server.conf,
// unchanged, and the CLI steps of SPIRE's quickstart documentation.
func TestSPIREQuickstart(t *testing.T) {
	dir := shortTempDir(t)
	if err := os.MkdirAll(filepath.Join(dir, "conf/server"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "conf/server/server.conf"), []byte(spireQuickstartServerConf), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := start(t, dir, "spire-server", "run", "-config", "conf/server/server.conf")
	eventually(t, 20*time.Second, "healthcheck", func() error {
		if done, code := srv.exited(); done {
			t.Fatalf("server exited with %d", code)
		}
		r := cli(t, dir, "spire-server", "healthcheck")
		if r.code != 0 {
			return errString(r.stderr + r.stdout)
		}
		return nil
	})
	if out := mustCLI(t, dir, "spire-server", "healthcheck"); strings.TrimSpace(out) != "Server is healthy." {
		t.Fatalf("healthcheck printed %q", out)
	}

	out := mustCLI(t, dir, "spire-server", "token", "generate", "-spiffeID", "spiffe://example.org/myagent")
	if !regexp.MustCompile(`^Token: [0-9a-f-]{36}\n$`).MatchString(out) {
		t.Fatalf("token generate printed %q", out)
	}

	out = mustCLI(t, dir, "spire-server", "entry", "create",
		"-parentID", "spiffe://example.org/myagent",
		"-spiffeID", "spiffe://example.org/myservice",
		"-selector", "unix:uid:0")
	for _, want := range []string{
		"Entry ID         : ",
		"SPIFFE ID        : spiffe://example.org/myservice\n",
		"Parent ID        : spiffe://example.org/myagent\n",
		"Revision         : 0\n",
		"X509-SVID TTL    : default\n",
		"JWT-SVID TTL     : default\n",
		"Selector         : unix:uid:0\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("entry create output lacks %q:\n%s", want, out)
		}
	}

	out = mustCLI(t, dir, "spire-server", "entry", "show")
	if !strings.HasPrefix(out, "Found 2 entries\n") {
		t.Fatalf("entry show (the node alias and the workload) printed:\n%s", out)
	}
	out = mustCLI(t, dir, "spire-server", "entry", "show", "-spiffeID", "spiffe://example.org/myservice", "-output", "json")
	var parsed struct {
		Entries []struct {
			SpiffeID struct {
				TrustDomain string `json:"trust_domain"`
				Path        string `json:"path"`
			} `json:"spiffe_id"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(out), &parsed); err != nil {
		t.Fatalf("entry show -output json: %v\n%s", err, out)
	}
	if len(parsed.Entries) != 1 || parsed.Entries[0].SpiffeID.Path != "/myservice" {
		t.Fatalf("entry show -output json: %s", out)
	}

	// A duplicate is refused and nothing is added.
	r := cli(t, dir, "spire-server", "entry", "create",
		"-parentID", "spiffe://example.org/myagent",
		"-spiffeID", "spiffe://example.org/myservice",
		"-selector", "unix:uid:0")
	if r.code == 0 || !strings.Contains(r.stdout+r.stderr, "similar entry already exists") {
		t.Fatalf("duplicate entry create: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if out := mustCLI(t, dir, "spire-server", "entry", "count"); !strings.Contains(out, "2 registration entries") {
		t.Fatalf("entry count after duplicate: %q", out)
	}

	// The datastore and the CA's keys live where the config says.
	for _, f := range []string{"data/server/datastore.sqlite3", "data/server/keys.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("expected %s: %v", f, err)
		}
	}
}

// TestServerConfigErrors shows start-up refusing a bad config with the
// file, the key and what is wrong.
func TestServerConfigErrors(t *testing.T) {
	dir := shortTempDir(t)
	for _, tc := range []struct {
		name, edit, want string
	}{
		{"unknown key", strings.Replace(spireQuickstartServerConf, `log_level = "DEBUG"`, `log_level = "DEBUG"
    bogus_key = 1`, 1), "server.conf:8: server.bogus_key: unknown key"},
		{"bad duration", strings.Replace(spireQuickstartServerConf, `"168h"`, `"7 days"`, 1), `server.conf:8: server.ca_ttl: invalid duration "7 days"`},
		{"missing trust domain", strings.Replace(spireQuickstartServerConf, `trust_domain = "example.org"`, ``, 1), "server.trust_domain is required"},
		{"unknown plugin", strings.Replace(spireQuickstartServerConf, `KeyManager "disk"`, `KeyManager "vault"`, 1), `unknown KeyManager plugin "vault"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "server.conf")
			if err := os.WriteFile(path, []byte(tc.edit), 0o644); err != nil {
				t.Fatal(err)
			}
			r := cli(t, dir, "spire-server", "run", "-config", path, "-socketPath", filepath.Join(dir, "s.sock"), "-serverPort", "0")
			if r.code == 0 {
				t.Fatal("server started with a bad config")
			}
			if !strings.Contains(r.stdout+r.stderr, tc.want) {
				t.Fatalf("error does not say %q:\n%s%s", tc.want, r.stdout, r.stderr)
			}
		})
	}
}

type errString string

func (e errString) Error() string { return string(e) }
