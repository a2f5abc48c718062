package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// serverEnv is a running spire-server with its own directory and ports.
type serverEnv struct {
	dir, socket, conf string
	port              int
	// ip is the address it binds, when not 127.0.0.1 ("").
	ip string
	// metricsPort serves Prometheus metrics (telemetry block) and
	// profilingPort pprof (profiling_enabled).
	metricsPort, profilingPort int
	proc                       *proc
}

// serverConfig is what differs between the tests' server.conf files; the
// rest is SQLite and a disk key manager in the server's own directory.
type serverConfig struct {
	extra        string // lines inside server {}
	nodeAttestor string // the NodeAttestor block
	telemetry    bool   // pprof and Prometheus on fresh ports
	// keyManager replaces the disk KeyManager block; plugins are more
	// blocks for the plugins section.
	keyManager, plugins string
}

// startServerConf writes a server.conf from c and runs the server until the
// test ends.
func startServerConf(t *testing.T, c serverConfig) *serverEnv {
	t.Helper()
	dir := shortTempDir(t)
	s := &serverEnv{dir: dir, socket: filepath.Join(dir, "server.sock"), conf: filepath.Join(dir, "server.conf"), port: freePort(t)}
	var serverExtra, telemetry string
	keyManager := c.keyManager
	if keyManager == "" {
		keyManager = fmt.Sprintf(`KeyManager "disk" {
        plugin_data {
            keys_path = %q
        }
    }`, filepath.Join(dir, "data/keys.json"))
	}
	if c.telemetry {
		s.metricsPort, s.profilingPort = freePort(t), freePort(t)
		serverExtra = fmt.Sprintf("profiling_enabled = true\n    profiling_port = %d\n    ", s.profilingPort)
		telemetry = fmt.Sprintf(`telemetry {
    Prometheus {
        host = "127.0.0.1"
        port = %d
    }
}
`, s.metricsPort)
	}
	conf := fmt.Sprintf(`server {
    bind_address = "127.0.0.1"
    bind_port = "%d"
    socket_path = %q
    trust_domain = "example.org"
    data_dir = %q
    log_level = "DEBUG"
    %s%s
}
plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = %q
        }
    }
    %s
    %s
    %s
}
%s`, s.port, s.socket, filepath.Join(dir, "data"), serverExtra, c.extra, filepath.Join(dir, "data/datastore.sqlite3"), keyManager, c.nodeAttestor, c.plugins, telemetry)
	if err := os.WriteFile(s.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	s.start(t)
	return s
}

// joinTokenAttestor is the NodeAttestor block of join-token servers and
// agents.
const joinTokenAttestor = `NodeAttestor "join_token" {
        plugin_data {}
    }`

// startServer runs a join-token server with telemetry and profiling on;
// extra goes inside server {}.
func startServer(t *testing.T, extra string) *serverEnv {
	t.Helper()
	return startServerConf(t, serverConfig{extra: extra, nodeAttestor: joinTokenAttestor, telemetry: true})
}

// start (re)starts the server process and waits until it is healthy.
func (s *serverEnv) start(t *testing.T) {
	t.Helper()
	s.proc = start(t, s.dir, "spire-server", "run", "-config", s.conf)
	eventually(t, 20*time.Second, "server healthcheck", func() error {
		if done, code := s.proc.exited(); done {
			t.Fatalf("server exited with %d", code)
		}
		if r := cli(t, s.dir, "spire-server", "healthcheck", "-socketPath", s.socket); r.code != 0 {
			return errString(r.stdout + r.stderr)
		}
		return nil
	})
}

// cli runs a spire-server command against this server.
func (s *serverEnv) cli(t *testing.T, args ...string) string {
	t.Helper()
	return mustCLI(t, s.dir, "spire-server", append(args, "-socketPath", s.socket)...)
}

// token creates a join token; with alias, also the node-alias entry.
func (s *serverEnv) token(t *testing.T, alias string) string {
	t.Helper()
	args := []string{"token", "generate"}
	if alias != "" {
		args = append(args, "-spiffeID", alias)
	}
	out := s.cli(t, args...)
	tok := strings.TrimSpace(strings.TrimPrefix(strings.SplitN(out, "\n", 2)[0], "Token: "))
	if tok == "" {
		t.Fatalf("no token in %q", out)
	}
	return tok
}

// createEntry registers an entry and returns its ID.
func (s *serverEnv) createEntry(t *testing.T, args ...string) string {
	t.Helper()
	out := s.cli(t, append([]string{"entry", "create"}, args...)...)
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "Entry ID         : "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no entry ID in %q", out)
	return ""
}

// agentEnv is a running spire-agent.
type agentEnv struct {
	dir, socket, conf string
	// metricsPort serves Prometheus metrics and profilingPort pprof, when
	// the config has them.
	metricsPort, profilingPort int
	proc                       *proc
}

// agentConfig is what differs between the tests' agent.conf files; the
// rest is a disk key manager and a 500 ms sync interval.
type agentConfig struct {
	nodeAttestor     string // the NodeAttestor block
	workloadAttestor string // the WorkloadAttestor block
	telemetry        bool   // pprof, Prometheus on fresh ports and InMem
	// keyManager replaces the disk KeyManager block when set.
	keyManager string
}

// unixAttestor is the unix WorkloadAttestor block with the given
// plugin_data body.
func unixAttestor(pluginData string) string {
	return fmt.Sprintf(`WorkloadAttestor "unix" {
        plugin_data {%s}
    }`, pluginData)
}

// newAgent writes an agent.conf from c pointing at s, with the server's
// bundle as its bootstrap bundle, without starting the agent.
func newAgent(t *testing.T, s *serverEnv, c agentConfig) *agentEnv {
	t.Helper()
	dir := shortTempDir(t)
	bundle := filepath.Join(dir, "bootstrap.crt")
	if err := os.WriteFile(bundle, []byte(s.cli(t, "bundle", "show")), 0o644); err != nil {
		t.Fatal(err)
	}
	a := &agentEnv{dir: dir, socket: filepath.Join(dir, "agent.sock"), conf: filepath.Join(dir, "agent.conf")}
	var agentExtra, telemetry string
	if c.telemetry {
		a.metricsPort, a.profilingPort = freePort(t), freePort(t)
		agentExtra = fmt.Sprintf("profiling_enabled = true\n    profiling_port = %d\n    ", a.profilingPort)
		telemetry = fmt.Sprintf(`telemetry {
    Prometheus {
        host = "127.0.0.1"
        port = %d
    }
    InMem {}
}
`, a.metricsPort)
	}
	keyManager := c.keyManager
	if keyManager == "" {
		keyManager = fmt.Sprintf(`KeyManager "disk" {
        plugin_data {
            directory = %q
        }
    }`, filepath.Join(dir, "data"))
	}
	conf := fmt.Sprintf(`agent {
    data_dir = %q
    log_level = "DEBUG"
    server_address = "127.0.0.1"
    server_port = "%d"
    socket_path = %q
    trust_bundle_path = %q
    trust_domain = "example.org"
    %sexperimental {
        sync_interval = "500ms"
    }
}
plugins {
    %s
    %s
    %s
}
%s`, filepath.Join(dir, "data"), s.port, a.socket, bundle, agentExtra, c.nodeAttestor, keyManager, c.workloadAttestor, telemetry)
	if err := os.WriteFile(a.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return a
}

// startAgent runs a join-token agent with the unix workload attestor
// (discovering workload paths) pointing at s, with token (empty to rely
// on the persisted SVID).
func startAgent(t *testing.T, s *serverEnv, token string) *agentEnv {
	t.Helper()
	a := newAgent(t, s, agentConfig{nodeAttestor: joinTokenAttestor, workloadAttestor: unixAttestor(`
            discover_workload_path = true
        `)})
	a.start(t, token)
	return a
}

// start (re)starts the agent and waits until its Workload API answers.
func (a *agentEnv) start(t *testing.T, token string) {
	t.Helper()
	args := []string{"run", "-config", a.conf}
	if token != "" {
		args = append(args, "-joinToken", token)
	}
	a.proc = start(t, a.dir, "spire-agent", args...)
	eventually(t, 20*time.Second, "agent healthcheck", func() error {
		if done, code := a.proc.exited(); done {
			t.Fatalf("agent exited with %d", code)
		}
		if r := cli(t, a.dir, "spire-agent", "healthcheck", "-socketPath", a.socket); r.code != 0 {
			return errString(r.stdout + r.stderr)
		}
		return nil
	})
}

func (a *agentEnv) addr() string { return "unix://" + a.socket }

// scrape returns the Prometheus exposition served on port.
func scrape(t *testing.T, port int) string {
	t.Helper()
	return httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
}

// httpGet returns the body of a 200 answer to a GET of url.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(b)
}

// metric returns the value of the sample whose name and labels are exactly
// series (as exposed, e.g. `x_total{code="OK"}`), or -1 when absent.
func metric(exposition, series string) float64 {
	for _, line := range strings.Split(exposition, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}
