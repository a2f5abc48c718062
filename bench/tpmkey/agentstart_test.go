package tpmkey

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/spiffe-hw/spire-hw/internal/childproc"
	"github.com/spiffe-hw/spire-hw/sim/swtpm"
	"github.com/spiffe-hw/spire-hw/tpm"
)

// binaries returns the directory holding spire-server and spire-agent:
// BENCH_TPMKEY_BIN (e.g. ./bin after `make build`), or a fresh build, so
// that a plain `go test` never measures stale binaries.
func binaries(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("BENCH_TPMKEY_BIN"); dir != "" {
		return dir
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/", "../../cmd/spire-server", "../../cmd/spire-agent")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("build: %v\n%s", err, out.String())
	}
	return dir
}

// residentKeyManagerBuilt reports whether the agent's catalog has
// KeyManager "tpm" (agent/keymanager/tpm, a change of its own), so that
// this benchmark runs before and after it lands.
func residentKeyManagerBuilt() bool {
	b, err := os.ReadFile("../../agent/catalog/keymanager.go")
	return err == nil && bytes.Contains(b, []byte(`Name: "tpm"`))
}

// watch is a process's output that notes when a line first appears.
type watch struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	seen map[string]time.Time
	want []string
}

func (w *watch) Write(p []byte) (int, error) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for _, s := range w.want {
		if _, ok := w.seen[s]; !ok && bytes.Contains(p, []byte(s)) {
			w.seen[s] = now
		}
	}
	return len(p), nil
}

func (w *watch) at(s string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.seen[s]
	return t, ok
}

func (w *watch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

const serverConf = `server {
    bind_address = "127.0.0.1"
    bind_port = "%d"
    socket_path = %q
    trust_domain = "example.org"
    data_dir = %q
    log_level = "INFO"
    ratelimit {
        attestation = false
        signing = false
    }
}
plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = %q
        }
    }
    KeyManager "memory" {
        plugin_data {}
    }
    NodeAttestor "tpm" {
        plugin_data {
            ek_ca_path = %q
        }
    }
}
`

// agentConf is SPIRE's defaults but for the key manager; the tpm node
// attestor and KeyManager "tpm" name the same TPM, so that they share
// one connection and the attestor certifies the key.
const agentConf = `agent {
    data_dir = %q
    log_level = "INFO"
    server_address = "127.0.0.1"
    server_port = "%d"
    socket_path = %q
    trust_bundle_path = %q
    trust_domain = "example.org"
}
plugins {
    NodeAttestor "tpm" {
        plugin_data {
            tpm_path = %q
        }
    }
    KeyManager %q {
        plugin_data {%s}
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
}
`

// attested is the log line the agent writes once its SVID is issued.
const attested = "Node attestation succeeded"

// startRun is one agent start: from the process start to the first
// X509-SVID a workload gets, and from the attestation line to it.
type startRun struct{ total, afterAttest time.Duration }

// agentStart runs the real server and agent on a swtpm, starting the
// agent afresh (empty data_dir, so it attests) with KeyManager "memory"
// and "tpm" in alternation, and renders the report's section.
func agentStart(t *testing.T, full bool) string {
	t.Helper()
	bin := binaries(t)
	fleet := swtpm.StartT(t, 1)
	path := fleet.TPMs[0].Path
	tp, err := tpm.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := tp.EK()
	if err != nil {
		t.Fatal(err)
	}
	ekHash, err := tpm.EKHash(ek.PublicKey())
	tp.Close() // swtpm serves one client: the agent's
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	ctx := context.Background()
	port := freePort(t)
	sock := filepath.Join(root, "server.sock")
	conf := filepath.Join(root, "server.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, serverConf, port, sock, filepath.Join(root, "data"), filepath.Join(root, "data", "ds.sqlite3"), fleet.CABundle), 0o644); err != nil {
		t.Fatal(err)
	}
	srvOut := &watch{seen: map[string]time.Time{}}
	srv := startProc(t, root, srvOut, filepath.Join(bin, "spire-server"), "run", "-config", conf)
	cliArgs := func(args ...string) []string { return append(args, "-socketPath", sock) }
	poll(t, 30*time.Second, "server healthy", func() error {
		if st := srv.State(); st != nil {
			t.Fatalf("server exited: %v\n%s", st, srvOut)
		}
		_, err := runCLI(ctx, root, filepath.Join(bin, "spire-server"), cliArgs("healthcheck")...)
		return err
	})
	bundle := filepath.Join(root, "bundle.crt")
	pem, err := runCLI(ctx, root, filepath.Join(bin, "spire-server"), cliArgs("bundle", "show")...)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bundle, []byte(pem), 0o644); err != nil {
		t.Fatal(err)
	}
	agentID := "spiffe://example.org/spire/agent/tpm/" + ekHash
	if _, err := runCLI(ctx, root, filepath.Join(bin, "spire-server"), cliArgs("entry", "create", "-parentID", agentID,
		"-spiffeID", "spiffe://example.org/bench/workload", "-selector", fmt.Sprintf("unix:uid:%d", os.Getuid()))...); err != nil {
		t.Fatal(err)
	}

	kms := []struct{ name, data string }{{"memory", ""}, {"tpm", fmt.Sprintf("\n            tpm_path = %q\n        ", path)}}
	if !residentKeyManagerBuilt() {
		kms = kms[:1]
	}
	runs := map[string][]startRun{}
	rounds := 1
	if full {
		rounds = 5
	}
	for r := range rounds {
		for _, km := range kms {
			dir := filepath.Join(root, fmt.Sprintf("agent-%s-%d", km.name, r))
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			aconf := filepath.Join(dir, "agent.conf")
			asock := filepath.Join(dir, "agent.sock")
			if err := os.WriteFile(aconf, fmt.Appendf(nil, agentConf, filepath.Join(dir, "data"), port, asock, bundle, path, km.name, km.data), 0o644); err != nil {
				t.Fatal(err)
			}
			out := &watch{seen: map[string]time.Time{}, want: []string{attested}}
			start := time.Now()
			a := startProc(t, dir, out, filepath.Join(bin, "spire-agent"), "run", "-config", aconf)
			var got time.Time
			poll(t, 60*time.Second, "first X509-SVID with KeyManager "+km.name, func() error {
				if st := a.State(); st != nil {
					t.Fatalf("agent (KeyManager %s) exited: %v\n%s", km.name, st, out)
				}
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				defer cancel()
				_, err := workloadapi.FetchX509SVID(cctx, workloadapi.WithAddr("unix://"+asock))
				if err == nil {
					got = time.Now()
				}
				return err
			})
			at, ok := out.at(attested)
			if !ok {
				t.Fatalf("agent (KeyManager %s) served an SVID without logging %q\n%s", km.name, attested, out)
			}
			runs[km.name] = append(runs[km.name], startRun{total: got.Sub(start), afterAttest: got.Sub(at)})
			a.Stop() // releases the TPM for the next agent
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "\n## Agent start to first X509-SVID (target <= 1 s after attestation)\n\n")
	fmt.Fprintf(&b, "The real spire-server and spire-agent binaries, the tpm node attestor on one swtpm, an agent started %d times per key manager with an empty data_dir (so it attests), the key managers alternating; a go-spiffe client polls FetchX509SVID every 10 ms from the agent's start. \"After attestation\" counts from the agent's `%s` log line.\n\n", rounds, attested)
	fmt.Fprintf(&b, "| KeyManager | start to first SVID (median) | max | attestation to first SVID (median) | max | target |\n|---|---|---|---|---|---|\n")
	for _, km := range []string{"memory", "tpm"} {
		rs, ok := runs[km]
		if !ok {
			fmt.Fprintf(&b, "| %s | not measured: the agent's catalog has no KeyManager \"tpm\" yet (agent/keymanager/tpm) | | | | |\n", km)
			continue
		}
		var tot, aft lat
		for _, r := range rs {
			tot, aft = append(tot, r.total), append(aft, r.afterAttest)
		}
		met := "met"
		if aft.quantile(0.5) > time.Second {
			met = "**missed**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | <= 1 s: %s |\n", km, round(tot.quantile(0.5)), round(tot.quantile(1)), round(aft.quantile(0.5)), round(aft.quantile(1)), met)
	}
	return b.String()
}

// startProc runs bin until the test ends.
func startProc(t *testing.T, dir string, out *watch, bin string, args ...string) *childproc.Proc {
	t.Helper()
	p, err := childproc.Start(dir, out, nil, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// runCLI runs bin to completion and returns its stdout.
func runCLI(ctx context.Context, dir, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.SysProcAttr = childproc.Attr()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, out.String()+errb.String())
	}
	return out.String(), nil
}

// poll retries f every 10 ms until it succeeds or timeout passes.
func poll(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v", what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
