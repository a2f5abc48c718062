package config

import (
	"strings"
	"testing"
	"time"
)

func TestConnectionLimits(t *testing.T) {
	base := "trust_domain = \"example.org\"\ndata_dir = \"/tmp/d\"\n"
	c, err := Parse("server.conf", []byte(withServer(base+`connection_limits {
		max_connections = 5000
		max_connections_per_id = 8
		max_handshakes = 300
		max_handshakes_per_source = 30
		max_unauthenticated = "400"
		max_unauthenticated_per_source = 40
		handshake_timeout = "3s"
		unauthenticated_idle_timeout = "7s"
	}`)), false)
	if err != nil {
		t.Fatal(err)
	}
	want := ConnectionLimits{
		MaxConnections: 5000, MaxConnectionsPerID: 8,
		MaxHandshakes: 300, MaxHandshakesPerSource: 30,
		MaxUnauthenticated: 400, MaxUnauthenticatedPerSource: 40,
		HandshakeTimeout: 3 * time.Second, IdleTimeout: 7 * time.Second,
	}
	if got := c.Server.ConnectionLimits; got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if len(c.Warnings) != 0 {
		t.Fatalf("warnings for our own block: %v", c.Warnings)
	}

	c, err = Parse("server.conf", []byte(withServer(base)), false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.ConnectionLimits != (ConnectionLimits{}) {
		t.Fatalf("no block: got %+v, want zero (the listener's defaults)", c.Server.ConnectionLimits)
	}

	for _, tc := range []struct{ body, want string }{
		{`max_unauthenticated_per_source = 0`, "max_unauthenticated_per_source"},
		{`max_connections = -3`, "greater than zero"},
		{`max_connections_per_id = 0`, "max_connections_per_id"},
		{`max_handshakes = "many"`, "whole number"},
		{`handshake_timeout = "0s"`, "handshake_timeout"},
		{`unauthenticated_idle_timeout = "soon"`, "unauthenticated_idle_timeout"},
		{`max_unauthenticated_per_ip = 5`, "unknown key"},
	} {
		_, err := Parse("server.conf", []byte(withServer(base+"connection_limits {\n"+tc.body+"\n}")), false)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error with %q", tc.body, err, tc.want)
		}
	}
}
