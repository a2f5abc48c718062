package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tracer "github.com/spiffe-hw/spire-hw/ebpf/lineage"
	"github.com/spiffe-hw/spire-hw/sim/simtest"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// startLineageAgent runs an agent whose only workload attestor is
// "lineage", with eBPF on.
func startLineageAgent(t *testing.T, s *serverEnv, token string) *agentEnv {
	t.Helper()
	a := newAgent(t, s, agentConfig{nodeAttestor: joinTokenAttestor, telemetry: true, workloadAttestor: `WorkloadAttestor "lineage" {
        plugin_data {
            discover_workload_path = true
            grace_period = "10s"
        }
    }`})
	a.start(t, token)
	return a
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestLineageAttestor: the real agent, attesting with the eBPF lineage
// table, issues an SVID to `spire-agent api fetch x509` started by this
// test binary, because its parent is this binary and it runs the
// spire-agent executable; an entry naming another parent is not issued.
func TestLineageAttestor(t *testing.T) {
	simtest.RequireRoot(t)
	if err := tracer.Supported(); err != nil {
		simtest.Skip(t, err.Error())
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, "")
	token := s.token(t, "spiffe://example.org/node")
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", "spiffe://example.org/fetcher",
		"-selector", "lineage:parent:path:"+self, "-selector", "unix:sha256:"+fileSHA256(t, bin("spire-agent")))
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", "spiffe://example.org/elsewhere",
		"-selector", "lineage:parent:path:/usr/sbin/cron")
	a := startLineageAgent(t, s, token)
	if out := a.proc.out.String(); !strings.Contains(out, "lineage: tracer started") {
		t.Fatalf("the agent did not start the eBPF tracer:\n%s", out)
	}

	out := shortTempDir(t)
	eventually(t, 30*time.Second, "an SVID for the fetcher", func() error {
		r := cli(t, a.dir, "spire-agent", "api", "fetch", "x509", "-socketPath", a.socket, "-write", out)
		if r.code != 0 {
			return errString(r.stdout + r.stderr)
		}
		return nil
	})
	svid, err := x509svid.Load(filepath.Join(out, "svid.0.pem"), filepath.Join(out, "svid.0.key"))
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID.String() != "spiffe://example.org/fetcher" {
		t.Fatalf("got SVID for %s", svid.ID)
	}
	if _, err := os.Stat(filepath.Join(out, "svid.1.pem")); err == nil {
		t.Fatal("an entry for another parent was issued too")
	}
	bundle, err := x509bundle.Load(spiffeid.RequireTrustDomainFromString("example.org"), filepath.Join(out, "bundle.0.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil {
		t.Fatalf("SVID does not verify against the bundle: %v", err)
	}

	// Both sides account for what just happened on /metrics.
	am := scrape(t, a.metricsPort)
	if v := metric(am, "spire_agent_lineage_events_total"); v <= 0 {
		t.Errorf("lineage events = %v, want > 0", v)
	}
	if v := metric(am, "spire_agent_lineage_ringbuf_drops_total"); v != 0 {
		t.Errorf("lineage ring-buffer drops = %v, want 0", v)
	}
	host, _ := os.Hostname()
	if v := metric(am, `spire_agent_rpc_workload_api_fetch_x509svid{host="`+host+`",status="OK"}`); v < 1 {
		t.Errorf("agent counted %v successful FetchX509SVID calls:\n%s", v, am)
	}
	sm := scrape(t, s.metricsPort)
	if v := metric(sm, `spire_server_rpc_agent_v1_agent_attest_agent{host="`+host+`",status="OK"}`); v != 1 {
		t.Errorf("server counted %v successful AttestAgent calls, want 1", v)
	}
	if cmdline := httpGet(t, fmt.Sprintf("http://localhost:%d/debug/pprof/cmdline", a.profilingPort)); !strings.Contains(cmdline, "spire-agent") {
		t.Errorf("agent pprof cmdline = %q", cmdline)
	}
}
