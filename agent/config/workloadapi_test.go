package config

import (
	"strings"
	"testing"
	"time"
)

func TestWorkloadAPILimits(t *testing.T) {
	bundle := "    trust_bundle_path = \"b.pem\"\n"
	c, err := Parse("agent.conf", []byte(withAgent(base+bundle+`    connection_limits {
      max_connections = 1000
      max_connections_per_uid = "64"
      handshake_timeout = "3s"
      idle_timeout = "30s"
    }`)), false)
	if err != nil {
		t.Fatal(err)
	}
	want := WorkloadAPILimits{MaxConnections: 1000, MaxConnectionsPerUID: 64, HandshakeTimeout: 3 * time.Second, IdleTimeout: 30 * time.Second}
	if c.Agent.WorkloadAPI != want {
		t.Fatalf("got %+v, want %+v", c.Agent.WorkloadAPI, want)
	}
	if len(c.Warnings) != 0 {
		t.Fatalf("our own keys warned: %v", c.Warnings)
	}

	// Left out, they are zero: the Workload API's defaults apply.
	c, err = Parse("agent.conf", []byte(withAgent(base+bundle)), false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Agent.WorkloadAPI != (WorkloadAPILimits{}) {
		t.Fatalf("without the keys: %+v", c.Agent.WorkloadAPI)
	}

	for _, tc := range []struct{ name, body, want string }{
		{"zero cap", `max_connections = 0`, `agent.connection_limits.max_connections: must be a whole number greater than zero, got "0"`},
		{"negative per-uid", `max_connections_per_uid = -3`, `agent.connection_limits.max_connections_per_uid: must be a whole number greater than zero, got "-3"`},
		{"not a number", `max_connections = "many"`, `got "many"`},
		{"zero idle", `idle_timeout = "0s"`, `agent.connection_limits.idle_timeout: must be greater than zero`},
		{"bad handshake", `handshake_timeout = "soon"`, `agent.connection_limits.handshake_timeout`},
		{"per-uid above total", "max_connections = 10\n      max_connections_per_uid = 20",
			`agent.connection_limits.max_connections_per_uid: is 20, more than max_connections (10)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("agent.conf", []byte(withAgent(base+bundle+"    connection_limits {\n      "+tc.body+"\n    }")), false)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
