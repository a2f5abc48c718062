package interop

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const trustDomain = "example.org"

// server is a running spire-server of either implementation. Both read the
// same configuration file: accepting SPIRE's config unchanged is part of
// what is tested.
type server struct {
	impl              impl
	dir, socket, conf string
	port              int
	proc              *proc
	// td is the server's trust domain, which its agents join; empty means
	// trustDomain.
	td string
	// env, when set, is added to the process's environment.
	env []string
}

// startServer runs impl's server with SQLite, the disk key manager and
// join-token attestation until the test ends.
func startServer(t *testing.T, im impl) *server {
	t.Helper()
	return startServerWith(t, im, func(dir string) string {
		return fmt.Sprintf(`    KeyManager "disk" {
        plugin_data {
            keys_path = %q
        }
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
`, filepath.Join(dir, "data", "keys.json"))
	})
}

// startServerWith runs impl's server with SQLite and the plugin blocks
// plugins returns for the server's directory, until the test ends.
func startServerWith(t *testing.T, im impl, plugins func(dir string) string) *server {
	t.Helper()
	dir := shortTempDir(t)
	s := &server{impl: im, dir: dir, socket: filepath.Join(dir, "api.sock"), conf: filepath.Join(dir, "server.conf"), port: freePort(t)}
	conf := fmt.Sprintf(`server {
    bind_address = "127.0.0.1"
    bind_port = "%d"
    socket_path = %q
    trust_domain = %q
    data_dir = %q
    log_level = "DEBUG"
    ca_ttl = "24h"
    default_x509_svid_ttl = "1h"
}
plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = %q
        }
    }
`, s.port, s.socket, trustDomain, filepath.Join(dir, "data"), filepath.Join(dir, "data", "datastore.sqlite3")) + plugins(dir) + "}\n"
	if err := os.WriteFile(s.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	s.start(t)
	return s
}

// start runs the server from s.conf and waits until it reports healthy.
func (s *server) start(t *testing.T) {
	t.Helper()
	s.proc = startEnv(t, s.dir, s.env, s.impl.server(), "run", "-config", s.conf)
	eventually(t, 60*time.Second, s.impl.name+" server healthcheck", func() error {
		if err := s.proc.exited(); err != nil {
			t.Fatal(err)
		}
		if r := runCLI(t, s.dir, s.impl.server(), "healthcheck", "-socketPath", s.socket); r.code != 0 {
			return fmt.Errorf("%s%s", r.stdout, r.stderr)
		}
		return nil
	})
}

// cli runs a spire-server command of the given implementation's CLI
// against this server's admin socket.
func (s *server) cli(t *testing.T, cli impl, args ...string) string {
	t.Helper()
	return mustCLI(t, s.dir, cli.server(), append(args, "-socketPath", s.socket)...)
}

// token generates a join token whose agent also gets alias as a node alias
// (SPIRE creates an entry parented to the agent).
func (s *server) token(t *testing.T, cli impl, alias string) string {
	t.Helper()
	out := s.cli(t, cli, "token", "generate", "-spiffeID", alias)
	tok, ok := strings.CutPrefix(strings.SplitN(out, "\n", 2)[0], "Token: ")
	if !ok || strings.TrimSpace(tok) == "" {
		t.Fatalf("no token in %q", out)
	}
	return strings.TrimSpace(tok)
}

// agent is a running spire-agent of either implementation.
type agent struct {
	impl              impl
	dir, socket, conf string
	proc              *proc
}

// startAgent runs impl's agent against s, in s's trust domain, with
// join-token attestation and the unix workload attestor; token empty means
// re-attest from the SVID persisted in the agent's data dir.
func startAgent(t *testing.T, im impl, s *server, token string) *agent {
	t.Helper()
	dir := shortTempDir(t)
	bundle := filepath.Join(dir, "bootstrap.crt")
	if err := os.WriteFile(bundle, []byte(s.cli(t, s.impl, "bundle", "show")), 0o644); err != nil {
		t.Fatal(err)
	}
	a := &agent{impl: im, dir: dir, socket: filepath.Join(dir, "agent.sock"), conf: filepath.Join(dir, "agent.conf")}
	td := s.td
	if td == "" {
		td = trustDomain
	}
	conf := fmt.Sprintf(`agent {
    data_dir = %q
    log_level = "DEBUG"
    server_address = "127.0.0.1"
    server_port = "%d"
    socket_path = %q
    trust_bundle_path = %q
    trust_domain = %q
}
plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "disk" {
        plugin_data {
            directory = %q
        }
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
}
`, filepath.Join(dir, "data"), s.port, a.socket, bundle, td, filepath.Join(dir, "data"))
	if err := os.WriteFile(a.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	a.start(t, token)
	return a
}

// start (re)starts the agent and waits until it reports healthy.
func (a *agent) start(t *testing.T, token string) {
	t.Helper()
	args := []string{"run", "-config", a.conf}
	if token != "" {
		args = append(args, "-joinToken", token)
	}
	a.proc = start(t, a.dir, a.impl.agent(), args...)
	eventually(t, 60*time.Second, a.impl.name+" agent healthcheck", func() error {
		if err := a.proc.exited(); err != nil {
			t.Fatal(err)
		}
		if r := runCLI(t, a.dir, a.impl.agent(), "healthcheck", "-socketPath", a.socket); r.code != 0 {
			return fmt.Errorf("%s%s", r.stdout, r.stderr)
		}
		return nil
	})
}

func (a *agent) addr() string { return "unix://" + a.socket }
