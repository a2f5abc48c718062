package hclconf

import (
	"fmt"
	"strings"
)

// HealthChecks is the health_checks block, shared by server and agent: an
// optional HTTP listener with liveness and readiness paths.
type HealthChecks struct {
	ListenerEnabled bool
	BindAddress     string
	BindPort        int
	LivePath        string
	ReadyPath       string
}

// DefaultHealthChecks returns SPIRE's defaults: disabled, localhost:80,
// /live and /ready.
func DefaultHealthChecks() HealthChecks {
	return HealthChecks{BindAddress: "localhost", BindPort: 80, LivePath: "/live", ReadyPath: "/ready"}
}

// ParseHealthChecks reads the health_checks block of root, starting from
// the defaults.
func ParseHealthChecks(root *Section) HealthChecks {
	hc := DefaultHealthChecks()
	s := root.Block("health_checks")
	if s == nil {
		return hc
	}
	s.Bool("listener_enabled", &hc.ListenerEnabled)
	s.String("bind_address", &hc.BindAddress)
	s.Port("bind_port", &hc.BindPort)
	for _, p := range []struct {
		key string
		dst *string
	}{{"live_path", &hc.LivePath}, {"ready_path", &hc.ReadyPath}} {
		s.Parse(p.key, func(v string) error {
			if !strings.HasPrefix(v, "/") {
				return fmt.Errorf("invalid path %q (start it with \"/\", e.g. \"/live\")", v)
			}
			*p.dst = v
			return nil
		})
	}
	s.Finish()
	if hc.LivePath == hc.ReadyPath {
		s.Errorf("ready_path", "same as live_path %q (give the two checks different paths)", hc.LivePath)
	}
	return hc
}
