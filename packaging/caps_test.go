package packaging_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/sim/simtest"
)

// TestAgentRunsWithUnitCapabilities runs the agent, with the eBPF lineage
// attestor, under exactly the capability bounding set its unit grants, and
// checks that a workload still gets its SVID: the unit's claim that these
// capabilities are enough is tested on this kernel, not only written down.
func TestAgentRunsWithUnitCapabilities(t *testing.T) {
	simtest.RequireRoot(t)
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		simtest.Skip(t, "kernel has no BTF for the lineage tracer: "+err.Error())
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		simtest.Skip(t, "setpriv (util-linux) not installed: "+err.Error())
	}
	unit, err := os.ReadFile("systemd/spire-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	var caps []string
	for _, line := range strings.Split(string(unit), "\n") {
		if v, ok := strings.CutPrefix(line, "CapabilityBoundingSet="); ok {
			for _, c := range strings.Fields(v) {
				caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
			}
		}
	}
	if len(caps) == 0 {
		t.Fatal("the agent unit sets no CapabilityBoundingSet")
	}
	bin := t.TempDir()
	for _, cmd := range []string{"spire-server", "spire-agent"} {
		if b, err := exec.Command("go", "build", "-o", filepath.Join(bin, cmd), "../cmd/"+cmd).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", cmd, err, b)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("bash", "testdata/agent-caps.sh", bin, strings.Join(caps, ","))
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("agent under %v: %v\n%s", caps, err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "spiffe://example.org/root-workload" {
		t.Fatalf("workload got %q under %v", got, caps)
	}
}
