package plugin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/plugin"
	"github.com/spiffe-hw/spire-hw/test/plugins/pluginbuild"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	workloadattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/workloadattestor/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const waService = "spire.plugin.agent.workloadattestor.v1.WorkloadAttestor"

var td = spiffeid.RequireTrustDomainFromString("example.org")

// loadWA loads the test workload attestor with extra plugin_data lines.
func loadWA(t *testing.T, data string, mod func(*plugin.Config)) (*plugin.Plugin, *syncbuf.Buffer, error) {
	t.Helper()
	var logs syncbuf.Buffer
	cfg := plugin.Config{
		Type: "WorkloadAttestor", Name: "ext", Cmd: pluginbuild.Build(t, "workloadattestor"),
		Data: data, TrustDomain: td, Service: waService,
		Log:        slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := plugin.Load(context.Background(), cfg)
	if err == nil {
		t.Cleanup(func() { p.Close() })
	}
	return p, &logs, err
}

func attest(ctx context.Context, p *plugin.Plugin) ([]string, error) {
	resp, err := workloadattestorv1.NewWorkloadAttestorClient(p.Conn()).Attest(ctx, &workloadattestorv1.AttestRequest{Pid: int32(os.Getpid())})
	return resp.GetSelectorValues(), err
}

func TestLoadConfiguresWithCoreConfig(t *testing.T) {
	p, logs, err := loadWA(t, `label = "blue"`, nil)
	if err != nil {
		t.Fatal(err)
	}
	sel, err := attest(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"label:blue": false, "trust_domain:example.org": false, fmt.Sprintf("uid:%d", os.Getuid()): false}
	for _, s := range sel {
		if _, ok := want[s]; ok {
			want[s] = true
		}
	}
	for s, seen := range want {
		if !seen {
			t.Errorf("selector %q missing from %q", s, sel)
		}
	}
	// The plugin's own hclog lines reach our log with its name.
	waitFor(t, func() bool { return pluginLine(logs.String(), "Configured") })
	if !strings.Contains(logs.String(), "Plugin checksum not configured") {
		t.Error("no warning for a plugin run without plugin_checksum")
	}
}

// pluginLine reports whether a JSON log line with msg also names the plugin.
func pluginLine(logs, msg string) bool {
	for _, line := range strings.Split(logs, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		if rec["msg"] == msg && rec["plugin_name"] == "ext" && rec["plugin_type"] == "WorkloadAttestor" {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLoadFailures(t *testing.T) {
	bin := pluginbuild.Build(t, "workloadattestor")
	sum := pluginbuild.SHA256(t, bin)
	wrong := strings.Repeat("ab", 32)
	noexec := filepath.Join(t.TempDir(), "noexec")
	if err := os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		mod  func(*plugin.Config)
		data string
		want []string
	}{
		{"checksum mismatch", func(c *plugin.Config) { c.Checksum = wrong }, "",
			[]string{`WorkloadAttestor "ext"`, "plugin_checksum mismatch", wrong, sum}},
		{"missing binary", func(c *plugin.Config) { c.Cmd = filepath.Join(t.TempDir(), "nope") }, "",
			[]string{`WorkloadAttestor "ext"`, "no such file"}},
		{"not executable", func(c *plugin.Config) { c.Cmd = noexec }, "",
			[]string{"not executable"}},
		{"not a plugin", func(c *plugin.Config) { c.Cmd = pluginbuild.Build(t, "notaplugin") }, "",
			[]string{`WorkloadAttestor "ext"`, "launch"}},
		{"wrong type", func(c *plugin.Config) { c.Type = "KeyManager" }, "",
			[]string{`KeyManager "ext"`, "launch"}},
		{"wrong service", func(c *plugin.Config) { c.Service = "spire.plugin.agent.keymanager.v1.KeyManager" }, "",
			[]string{"does not implement spire.plugin.agent.keymanager.v1.KeyManager"}},
		{"exits in Configure", nil, "exit_in_configure = true",
			[]string{`WorkloadAttestor "ext"`, "configure"}},
		{"Configure refuses", nil, "fail_configure = true",
			[]string{"configure", "fail_configure is set"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			_, _, err := loadWA(t, c.data, func(cfg *plugin.Config) {
				cfg.StartTimeout = 10 * time.Second
				if c.mod != nil {
					c.mod(cfg)
				}
			})
			if err == nil {
				t.Fatal("Load succeeded")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if d := time.Since(start); d > 9*time.Second {
				t.Errorf("Load took %s to fail", d)
			}
		})
	}
}

func TestChecksumMatch(t *testing.T) {
	bin := pluginbuild.Build(t, "workloadattestor")
	p, _, err := loadWA(t, "", func(c *plugin.Config) { c.Checksum = strings.ToUpper(pluginbuild.SHA256(t, bin)) })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest(context.Background(), p); err != nil {
		t.Fatal(err)
	}
}

// A plugin killed while serving: calls fail with Unavailable naming it,
// the host restarts and reconfigures it, and calls succeed again.
func TestRestartAfterKill(t *testing.T) {
	p, logs, err := loadWA(t, `label = "again"`, nil)
	if err != nil {
		t.Fatal(err)
	}
	pid := p.PID()
	if pid == 0 {
		t.Fatal("no PID")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, err = attest(context.Background(), p)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), `WorkloadAttestor "ext"`) {
		t.Fatalf("call to a killed plugin: %v, want Unavailable naming the plugin", err)
	}
	waitFor(t, func() bool { return p.Restarts() == 1 && p.PID() != 0 })
	if p.PID() == pid {
		t.Fatal("restarted plugin has the old PID")
	}
	sel, err := attest(context.Background(), p)
	if err != nil {
		t.Fatalf("call after restart: %v", err)
	}
	if !strings.Contains(strings.Join(sel, ","), "label:again") {
		t.Fatalf("restarted plugin was not configured again: %q", sel)
	}
	if !strings.Contains(logs.String(), "Plugin restarted") {
		t.Error("no log line for the restart")
	}
}

// A plugin that crashes inside a call.
func TestCrashDuringCall(t *testing.T) {
	p, logs, err := loadWA(t, `crash = true`, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = attest(context.Background(), p)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("call that crashes the plugin: %v, want Unavailable", err)
	}
	waitFor(t, func() bool { return p.Restarts() >= 1 && p.PID() != 0 })
	if !strings.Contains(logs.String(), "Plugin failed; restarting it") {
		t.Error("no log line for the failure")
	}
}

// A plugin that never answers: the call ends at CallTimeout with
// Unavailable, and the hung process is replaced.
func TestHungPlugin(t *testing.T) {
	p, _, err := loadWA(t, `hang = true`, func(c *plugin.Config) { c.CallTimeout = 300 * time.Millisecond })
	if err != nil {
		t.Fatal(err)
	}
	pid := p.PID()
	start := time.Now()
	_, err = attest(context.Background(), p)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not answering") {
		t.Fatalf("call to a hung plugin: %v, want Unavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("hung call took %s", d)
	}
	waitFor(t, func() bool { return p.Restarts() >= 1 && p.PID() != 0 && p.PID() != pid })
	waitFor(t, func() bool { return !alive(pid) })

	// A caller's own shorter deadline is the caller's business: it ends the
	// call but does not restart the plugin.
	restarts := p.Restarts()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = attest(ctx, p)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("call with the caller's deadline: %v, want DeadlineExceeded", err)
	}
	if p.Restarts() != restarts {
		t.Fatal("caller's deadline restarted the plugin")
	}
}

func alive(pid int) bool {
	// A zombie still answers kill(0); read its state instead.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

func TestCloseStopsProcess(t *testing.T) {
	p, _, err := loadWA(t, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	pid := p.PID()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if alive(pid) {
		t.Fatalf("plugin %d still running after Close", pid)
	}
	if _, err := attest(context.Background(), p); status.Code(err) != codes.Unavailable {
		t.Fatalf("call after Close: %v", err)
	}
}

// Close while the plugin is down and being restarted: it returns promptly
// and leaves no process behind.
func TestCloseDuringRestart(t *testing.T) {
	p, _, err := loadWA(t, "", func(c *plugin.Config) { c.MinBackoff = 200 * time.Millisecond })
	if err != nil {
		t.Fatal(err)
	}
	pid := p.PID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return p.PID() == 0 }) // down, restart pending
	start := time.Now()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Close took %s", d)
	}
	if p.Restarts() != 0 || p.PID() != 0 {
		t.Fatalf("plugin restarted after Close: restarts %d, pid %d", p.Restarts(), p.PID())
	}
}

// plugin_cmd is a path: relative to the working directory, never looked up
// in PATH, as SPIRE resolves it.
func TestRelativeCmd(t *testing.T) {
	bin := pluginbuild.Build(t, "workloadattestor")
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, bin)
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := loadWA(t, "", func(c *plugin.Config) { c.Cmd = rel })
	if err != nil {
		t.Fatalf("relative plugin_cmd %s: %v", rel, err)
	}
	if _, err := attest(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	_, _, err = loadWA(t, "", func(c *plugin.Config) { c.Cmd = filepath.Base(bin) })
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("bare plugin_cmd found through PATH: %v", err)
	}
}
