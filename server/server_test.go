package server

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/server/config"
)

// serverConf is a configuration whose plugins block starts at line 8 with
// the blocks given.
func serverConf(t *testing.T, plugins ...string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	text := fmt.Sprintf("server {\n    bind_address = \"127.0.0.1\"\n    bind_port = 0\n    socket_path = %q\n    trust_domain = \"example.org\"\n    data_dir = %q\n}\nplugins {\n    %s\n}\n",
		filepath.Join(dir, "api.sock"), dir, strings.Join(plugins, "\n    "))
	cfg, err := config.Parse("server.conf", []byte(text), false)
	if err != nil {
		t.Fatalf("parse:\n%s\n%v", text, err)
	}
	return cfg
}

func sqlite(t *testing.T) string {
	return fmt.Sprintf(`DataStore "sql" { plugin_data { database_type = "sqlite3" connection_string = %q } }`, filepath.Join(t.TempDir(), "ds.sqlite3"))
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestNewBuildsFromCatalog starts the wiring end to end with built-ins and
// checks that every plugin that may hold resources is handed to close.
func TestNewBuildsFromCatalog(t *testing.T) {
	cfg := serverConf(t, sqlite(t), `KeyManager "memory" {}`, `NodeAttestor "join_token" {}`)
	s, err := New(context.Background(), cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	var got []string
	for _, c := range s.closers {
		got = append(got, fmt.Sprintf("%T", c))
	}
	// No UpstreamAuthority: the nil one is skipped by close.
	if want := []string{"*memory.KeyManager", "<nil>", "*jointoken.Attestor"}; !slices.Equal(got, want) {
		t.Fatalf("closers %q, want %q", got, want)
	}
}

// TestNewErrors: the errors an operator saw before the catalog existed.
func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		plugins func(t *testing.T) []string
		err     string
	}{
		{"unknown KeyManager", func(t *testing.T) []string {
			return []string{sqlite(t), `KeyManager "vault" {}`, `NodeAttestor "join_token" {}`}
		}, `server.conf:10: KeyManager "vault": unknown KeyManager plugin "vault" (supported: memory, disk, pkcs11)`},
		{"unknown DataStore", func(t *testing.T) []string {
			return []string{`DataStore "etcd" {}`, `KeyManager "memory" {}`, `NodeAttestor "join_token" {}`}
		}, `server.conf:9: DataStore "etcd": unknown DataStore plugin "etcd" (supported: sql)`},
		{"unknown UpstreamAuthority", func(t *testing.T) []string {
			return []string{sqlite(t), `KeyManager "memory" {}`, `UpstreamAuthority "vault" {}`, `NodeAttestor "join_token" {}`}
		}, `server.conf:11: UpstreamAuthority "vault": unknown UpstreamAuthority plugin "vault" (supported: disk, pkcs11)`},
		{"unknown second NodeAttestor", func(t *testing.T) []string {
			return []string{sqlite(t), `KeyManager "memory" {}`, `NodeAttestor "join_token" {}`, `NodeAttestor "k8s_sat" {}`}
		}, `server.conf:12: NodeAttestor "k8s_sat": unknown NodeAttestor plugin "k8s_sat" (supported: join_token, tpm, aws_iid, azure_msi, gcp_iit, k8s_psat, x509pop, sshpop, tpm_devid)`},
		{"disk KeyManager without keys_path", func(t *testing.T) []string {
			return []string{sqlite(t), `KeyManager "disk" { plugin_data {} }`, `NodeAttestor "join_token" {}`}
		}, `server.conf:10: KeyManager "disk".plugin_data.keys_path: is required`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(context.Background(), serverConf(t, tc.plugins(t)...), quiet())
			if err == nil || err.Error() != tc.err {
				t.Fatalf("error:\n got %v\nwant %s", err, tc.err)
			}
		})
	}
}

// TestNoPlugin covers a Config built by hand, which server/config's arity
// rules never saw.
func TestNoPlugin(t *testing.T) {
	s := &Server{cfg: &config.Config{}, log: quiet()}
	if _, err := s.openDataStore(context.Background()); err == nil || err.Error() != "server: no DataStore plugin configured" {
		t.Errorf("DataStore: %v", err)
	}
	if _, err := s.newKeyManager(context.Background()); err == nil || err.Error() != "server: no KeyManager plugin configured" {
		t.Errorf("KeyManager: %v", err)
	}
	if up, err := s.newUpstream(context.Background()); up != nil || err != nil {
		t.Errorf("UpstreamAuthority: %v, %v; want none", up, err)
	}
	if as, err := s.newAttestors(context.Background()); len(as) != 0 || err != nil {
		t.Errorf("NodeAttestors: %v, %v; want none", as, err)
	}
}

// TestAttestorsByName: agents name the attestation type, which is the
// plugin name. aws_iid refuses to start without the datastore, so this also
// shows the open datastore reaches the rows.
func TestAttestorsByName(t *testing.T) {
	cfg := serverConf(t, sqlite(t), `KeyManager "memory" {}`, `NodeAttestor "join_token" {}`, `NodeAttestor "aws_iid" { plugin_data { access_key_id = "AKID" secret_access_key = "secret" } }`)
	s := &Server{cfg: cfg, log: quiet()}
	defer s.close()
	var err error
	if s.ds, err = s.openDataStore(context.Background()); err != nil {
		t.Fatal(err)
	}
	as, err := s.newAttestors(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for name, a := range as {
		names = append(names, name+"="+a.Type())
	}
	slices.Sort(names)
	if want := []string{"aws_iid=aws_iid", "join_token=join_token"}; !slices.Equal(names, want) {
		t.Fatalf("attestors %q, want %q", names, want)
	}
}
