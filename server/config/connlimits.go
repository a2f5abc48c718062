package config

import (
	"fmt"
	"strconv"
	"time"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
)

// ConnectionLimits is the server block's connection_limits block, our own
// (SPIRE has no such block, so no SPIRE key can collide with it): caps and
// timeouts of the agent TCP listener. Zero values leave the listener's
// defaults. The fields are those of server/endpoints.Limits, in the same
// order, so that the server converts one into the other.
type ConnectionLimits struct {
	MaxConnections              int
	MaxHandshakes               int
	MaxHandshakesPerSource      int
	MaxUnauthenticated          int
	MaxUnauthenticatedPerSource int
	HandshakeTimeout            time.Duration
	IdleTimeout                 time.Duration
}

const connectionLimitsExample = `connection_limits { max_unauthenticated_per_source = 128 }`

func parseConnectionLimits(s *hclconf.Section) ConnectionLimits {
	var cl ConnectionLimits
	b := s.Block("connection_limits")
	if b == nil {
		return cl
	}
	count := func(key string, dst *int) {
		b.Parse(key, func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return fmt.Errorf("must be a whole number greater than zero, got %q (remove it to use the default; example: %s)", v, connectionLimitsExample)
			}
			*dst = n
			return nil
		})
	}
	count("max_connections", &cl.MaxConnections)
	count("max_handshakes", &cl.MaxHandshakes)
	count("max_handshakes_per_source", &cl.MaxHandshakesPerSource)
	count("max_unauthenticated", &cl.MaxUnauthenticated)
	count("max_unauthenticated_per_source", &cl.MaxUnauthenticatedPerSource)
	positive := func(key string, dst *time.Duration) {
		var v time.Duration
		if b.Duration(key, &v) {
			if v == 0 {
				b.Errorf(key, "must be greater than zero (remove it to use the default)")
				return
			}
			*dst = v
		}
	}
	positive("handshake_timeout", &cl.HandshakeTimeout)
	positive("unauthenticated_idle_timeout", &cl.IdleTimeout)
	b.Finish()
	return cl
}
