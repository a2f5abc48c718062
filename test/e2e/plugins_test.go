package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/test/plugins/bundlelog"
	"github.com/spiffe-hw/spire-hw/test/plugins/pluginbuild"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// externalBlock is a plugins block for an SDK plugin binary, written as
// SPIRE's documentation writes one (plugin_cmd, plugin_checksum,
// plugin_data).
func externalBlock(t *testing.T, typ, name, binary, data string) string {
	t.Helper()
	bin := pluginbuild.Build(t, binary)
	return fmt.Sprintf(`%s %q {
        plugin_cmd = %q
        plugin_checksum = %q
        plugin_data {
            %s
        }
    }`, typ, name, bin, pluginbuild.SHA256(t, bin), data)
}

// pluginPIDs lists the running processes whose executable is one of the
// built test plugins.
func pluginPIDs(t *testing.T, binaries ...string) []int {
	t.Helper()
	want := map[string]bool{}
	for _, b := range binaries {
		want[pluginbuild.Build(t, b)] = true
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || !want[exe] {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			if i := strings.LastIndexByte(string(stat), ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
				continue // a zombie is gone for our purposes
			}
		}
		pids = append(pids, pid)
	}
	return pids
}

// childPIDs filters pids to the children of parent.
func childPIDs(pids []int, parent int) []int {
	var out []int
	for _, pid := range pids {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(stat)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(parent) {
			out = append(out, pid)
		}
	}
	return out
}

// TestExternalPlugins runs a server and an agent whose plugins are SDK
// plugin binaries configured as SPIRE's documentation configures them: the
// CA's keys live in an external KeyManager under an external
// UpstreamAuthority's root, the agent attests with an external HMAC
// NodeAttestor pair (a challenge round, and an AgentStore host-service
// lookup), a workload is attested by an external WorkloadAttestor's
// selectors, and a Notifier sees the bundle at start-up and on every
// change. Stopping or killing the daemons leaves no plugin running.
func TestExternalPlugins(t *testing.T) {
	t.Parallel()
	notified := filepath.Join(shortTempDir(t), "notifier.jsonl")
	published := filepath.Join(shortTempDir(t), "publisher.jsonl")
	serverPlugins := []string{"keymanager", "servernodeattestor", "upstreamauthority", "notifier", "bundlepublisher"}
	s := startServerConf(t, serverConfig{
		// A short CA TTL makes the CA prepare a new JWT key within the
		// test, which changes the bundle.
		extra:        `ca_ttl = "40s"` + "\n    default_x509_svid_ttl = \"10s\"",
		keyManager:   externalBlock(t, "KeyManager", "ext_km", "keymanager", ""),
		nodeAttestor: externalBlock(t, "NodeAttestor", "hmac", "servernodeattestor", `secret = "s3cret"`+"\n            use_agent_store = true"),
		plugins: externalBlock(t, "UpstreamAuthority", "ext_upstream", "upstreamauthority", "") + "\n    " +
			externalBlock(t, "Notifier", "ext_notifier", "notifier", fmt.Sprintf("path = %q", notified)) + "\n    " +
			externalBlock(t, "BundlePublisher", "ext_publisher", "bundlepublisher", fmt.Sprintf("path = %q", published)),
	})
	serverPIDs := childPIDs(pluginPIDs(t, serverPlugins...), s.proc.Pid())
	if len(serverPIDs) != len(serverPlugins) {
		t.Fatalf("server runs %d plugin processes, want %d", len(serverPIDs), len(serverPlugins))
	}

	agentID := "spiffe://example.org/spire/agent/hmac/node-1"
	workload := "spiffe://example.org/external/workload"
	s.createEntry(t, "-parentID", agentID, "-spiffeID", workload, "-selector", "ext_wl:label:e2e")
	// The same workload matched by a selector the external attestor does
	// not produce must not get this entry.
	s.createEntry(t, "-parentID", agentID, "-spiffeID", "spiffe://example.org/external/other", "-selector", "ext_wl:label:other")
	a := newAgent(t, s, agentConfig{
		nodeAttestor:     externalBlock(t, "NodeAttestor", "hmac", "agentnodeattestor", `node_name = "node-1"`+"\n            secret = \"s3cret\""),
		workloadAttestor: externalBlock(t, "WorkloadAttestor", "ext_wl", "workloadattestor", `label = "e2e"`),
	})
	a.start(t, "")

	// The agent is named by the external server attestor, with its
	// selectors, one of them from the AgentStore host service.
	agents := listAgents(t, s)
	ag, ok := agents[agentID]
	if !ok {
		t.Fatalf("agent %s not listed: %v", agentID, agents)
	}
	// seen_before is false at the first attestation and true once the
	// agent re-attests, which a short CA TTL makes it do early.
	if !ag.has("hmac:node:node-1") || !(ag.has("hmac:seen_before:false") || ag.has("hmac:seen_before:true")) {
		t.Fatalf("agent selectors %+v, want hmac:node:node-1 and an hmac:seen_before selector", ag.Selectors)
	}

	// The workload's SVID comes through the external attestor's selectors
	// and chains to the external upstream's root through a CA whose key
	// the external KeyManager holds.
	c := newClient(t, a)
	x := fetchX509(t, c, workload)
	ids := svidIDs(t, x)
	if len(ids) != 1 || ids[0] != workload {
		t.Fatalf("workload got %q, want only %s", ids, workload)
	}
	_, chains, err := x509svid.Verify(x.SVIDs[0].Certificates, x.Bundles)
	if err != nil {
		t.Fatal(err)
	}
	root := chains[0][len(chains[0])-1]
	if root.Subject.CommonName != "test upstream root" {
		t.Fatalf("SVID chains to %q, want the external upstream's root", root.Subject)
	}
	for _, line := range []string{`msg="Generated key"`, `msg="Minted X509 CA"`} {
		if !strings.Contains(s.proc.out.String(), line) {
			t.Errorf("server log has no plugin line %s", line)
		}
	}
	if !strings.Contains(s.proc.out.String(), `plugin_name=ext_km`) {
		t.Error("plugin log lines do not name the plugin")
	}

	// The Notifier saw the bundle at start-up, then the change the CA's
	// next JWT key makes; the BundlePublisher published both.
	eventually(t, 60*time.Second, "a bundle update at the notifier and the publisher", func() error {
		n, err := bundlelog.Read(notified)
		if err != nil {
			return err
		}
		p, err := bundlelog.Read(published)
		if err != nil {
			return err
		}
		if len(n) < 2 || n[0].Event != "loaded" || n[len(n)-1].Event != "updated" {
			return errString(fmt.Sprintf("notifier events %+v", n))
		}
		if len(p) < 2 || p[len(p)-1].JWTAuthorities <= p[0].JWTAuthorities {
			return errString(fmt.Sprintf("publisher events %+v", p))
		}
		if n[0].TrustDomain != "example.org" || n[0].X509Authorities != 1 {
			return errString(fmt.Sprintf("loaded event %+v", n[0]))
		}
		return nil
	})

	// SIGTERM to the daemons alone (not their process group): each stops
	// its plugins before it exits.
	agentPlugins := childPIDs(pluginPIDs(t, "agentnodeattestor", "workloadattestor"), a.proc.Pid())
	if len(agentPlugins) != 2 {
		t.Fatalf("agent runs %d plugin processes, want 2", len(agentPlugins))
	}
	for _, p := range []*proc{a.proc, s.proc} {
		if err := syscall.Kill(p.Pid(), syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.Done():
		case <-time.After(20 * time.Second):
			t.Fatal("daemon did not stop within 20s of SIGTERM")
		}
	}
	if left := intersect(pluginPIDs(t, append(serverPlugins, "agentnodeattestor", "workloadattestor")...), append(agentPlugins, serverPIDs...)); len(left) > 0 {
		t.Fatalf("plugins %v still running after their daemons stopped", left)
	}
}

func intersect(a, b []int) []int {
	var out []int
	for _, x := range a {
		for _, y := range b {
			if x == y {
				out = append(out, x)
			}
		}
	}
	return out
}

// TestExternalPluginsDieWithTheDaemon kills the server with SIGKILL, which
// runs none of its clean-up: the kernel still ends every plugin it started.
func TestExternalPluginsDieWithTheDaemon(t *testing.T) {
	t.Parallel()
	s := startServerConf(t, serverConfig{
		keyManager:   externalBlock(t, "KeyManager", "ext_km", "keymanager", ""),
		nodeAttestor: joinTokenAttestor,
	})
	plugins := childPIDs(pluginPIDs(t, "keymanager"), s.proc.Pid())
	if len(plugins) != 1 {
		t.Fatalf("server runs %d key manager plugins, want 1", len(plugins))
	}
	if err := syscall.Kill(s.proc.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-s.proc.Done()
	eventually(t, 10*time.Second, "the plugin to end with the server", func() error {
		if left := intersect(pluginPIDs(t, "keymanager"), plugins); len(left) > 0 {
			return errString(fmt.Sprintf("plugin %v still running", left))
		}
		return nil
	})
}

// TestExternalPluginStartupErrors: a configuration naming a bad plugin
// stops start-up with an error that names the plugin and the fix.
func TestExternalPluginStartupErrors(t *testing.T) {
	t.Parallel()
	bin := pluginbuild.Build(t, "keymanager")
	wrong := strings.Repeat("0", 64)
	for _, tc := range []struct {
		name, block string
		want        []string
	}{
		{"bad checksum", fmt.Sprintf("KeyManager \"ext_km\" {\n plugin_cmd = %q\n plugin_checksum = %q\n}", bin, wrong),
			[]string{`KeyManager "ext_km"`, "plugin_checksum mismatch", wrong, pluginbuild.SHA256(t, bin)}},
		{"missing binary", "KeyManager \"ext_km\" {\n plugin_cmd = \"/nonexistent/km\"\n}",
			[]string{`KeyManager "ext_km"`, "/nonexistent/km", "no such file"}},
		{"not a plugin", fmt.Sprintf("KeyManager \"ext_km\" {\n plugin_cmd = %q\n}", pluginbuild.Build(t, "notaplugin")),
			[]string{`KeyManager "ext_km"`, "launch"}},
		{"plugin of another type", fmt.Sprintf("KeyManager \"ext_km\" {\n plugin_cmd = %q\n}", pluginbuild.Build(t, "notifier")),
			[]string{`KeyManager "ext_km"`, "launch"}},
		{"exits in Configure", fmt.Sprintf("KeyManager \"ext_km\" {\n plugin_cmd = %q\n plugin_data { exit_in_configure = true }\n}", bin),
			[]string{`KeyManager "ext_km"`, "configure"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := shortTempDir(t)
			conf := filepath.Join(dir, "server.conf")
			body := fmt.Sprintf(`server {
    bind_address = "127.0.0.1"
    bind_port = "%d"
    socket_path = %q
    trust_domain = "example.org"
    data_dir = %q
}
plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = %q
        }
    }
    %s
    NodeAttestor "join_token" {}
}
`, freePort(t), filepath.Join(dir, "s.sock"), filepath.Join(dir, "data"), filepath.Join(dir, "ds.sqlite3"), tc.block)
			if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			r := cli(t, dir, "spire-server", "run", "-config", conf)
			if r.code == 0 {
				t.Fatalf("server started with %s", tc.name)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr+r.stdout, w) {
					t.Errorf("output does not contain %q:\n%s", w, r.stderr+r.stdout)
				}
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("start-up took %s to fail", d)
			}
		})
	}
}
