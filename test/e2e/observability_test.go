package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestServerObservability: the server's telemetry and profiling_enabled
// blocks serve Prometheus metrics that count the admin calls just made,
// and pprof on localhost.
func TestServerObservability(t *testing.T) {
	s := startServer(t, "")
	s.token(t, "")
	m := scrape(t, s.metricsPort)
	host, _ := os.Hostname()
	if v := metric(m, `spire_server_rpc_agent_v1_agent_create_join_token{host="`+host+`",status="OK"}`); v != 1 {
		t.Errorf("CreateJoinToken counted %v times, want 1", v)
	}
	if v := metric(m, "go_goroutines"); v <= 0 {
		t.Errorf("go_goroutines = %v", v)
	}
	cmdline := httpGet(t, fmt.Sprintf("http://localhost:%d/debug/pprof/cmdline", s.profilingPort))
	if !strings.Contains(cmdline, "spire-server") {
		t.Errorf("pprof cmdline = %q", cmdline)
	}
}
